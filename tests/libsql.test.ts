import { storageConformance } from "./conformance/storage.ts";
import { libsqlHarness } from "./libsql_helpers.ts";

storageConformance("libsql", () => libsqlHarness());
