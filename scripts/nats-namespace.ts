// A benchmark's NATS namespace, removed afterwards: every stream and KV bucket bus/jetstream.ts derives
// from it.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

/** A namespace of the run's own, so runs on a shared NATS never see each other's subjects. */
export function benchNamespace(bench: string): string {
  return `bench_${bench}_${process.pid}_${Date.now()}`;
}

/** Removes the namespace's streams and buckets. */
export async function removeNamespace(natsUrl: string, namespace: string): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    for await (const stream of jsm.streams.list()) {
      const name = stream.config.name;
      if (name.startsWith(`${namespace}_`) || name.startsWith(`KV_${namespace}_`)) {
        await jsm.streams.delete(name);
      }
    }
  } finally {
    await nc.close();
  }
}
