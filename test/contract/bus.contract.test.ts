// Runs the one bus contract against each implementation: in-process, and NATS JetStream on the server
// provisioned for this test run (each test in its own namespace, so tests never share a queue).
import { randomUUID } from "node:crypto";
import { inject } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { busContract } from "./bus-suite.ts";

busContract("in-process", (options) => {
  const broker = new InProcessBroker(options);
  return { connect: async () => broker.connect() };
});

busContract("jetstream", (options) => {
  const namespace = `t${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  return { connect: () => connectJetStreamBus({ servers: inject("natsUrl"), namespace, ...options }) };
});
