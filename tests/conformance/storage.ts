/**
 * The storage conformance suite. Every storage adapter runs it unchanged:
 *
 * ```ts
 * storageConformance("libsql", async () => makeLibsqlHarness());
 * ```
 *
 * It drives the real relay (`createOutbox`) against the adapter with an injected
 * clock, so leases, back-off and retention are tested without sleeping. Its sections
 * live in `storage/`, one file per property, sharing `storage/harness.ts`.
 */

import { atomicityTests } from "./storage/atomicity.ts";
import { budgetAndStartTests } from "./storage/budget_and_start.ts";
import { fanOutTests } from "./storage/fan_out.ts";
import { type HarnessFactory, storageSuite } from "./storage/harness.ts";
import { keyOrderTests } from "./storage/key_order.ts";
import { leaseTests } from "./storage/leases.ts";
import { instrumentationTests, operationsTests, retryAfterTests, signalTests } from "./storage/operations.ts";
import { productionTopologyTests } from "./storage/production_topology.ts";
import { retentionTests } from "./storage/retention.ts";
import { retryTests } from "./storage/retries.ts";
import { setupTests } from "./storage/setup.ts";
import { statsRequeueTests } from "./storage/stats_requeue.ts";

export type { HarnessFactory, StorageHarness } from "./storage/harness.ts";

/**
 * Registers the conformance tests for one storage, section by section.
 *
 * @param name Adapter name used as the test-name prefix.
 * @param factory Makes a fresh harness per test.
 */
export function storageConformance<Tx>(name: string, factory: HarnessFactory<Tx>): void {
  const suite = storageSuite(name, factory);
  atomicityTests(suite);
  keyOrderTests(suite);
  leaseTests(suite);
  retryTests(suite);
  retentionTests(suite);
  statsRequeueTests(suite);
  operationsTests(suite);
  signalTests(suite);
  instrumentationTests(suite);
  retryAfterTests(suite);
  budgetAndStartTests(suite);
  productionTopologyTests(suite);
  setupTests(suite);
  fanOutTests(suite);
}
