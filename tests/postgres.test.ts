import { storageConformance } from "./conformance/storage.ts";
import { postgresHarness } from "./postgres_helpers.ts";

storageConformance("postgres", () => postgresHarness());
