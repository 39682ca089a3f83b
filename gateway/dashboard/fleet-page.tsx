// The dashboard's fleet page: the workers whose heartbeats are live, per base — running sequences, queue
// depth, free slots, tokens/s — and the adapters each holds per tier (slot, RAM, disk). Workers and their
// slots are shared by every org, so counts cover everyone's adapters but only the caller's org's are named.
import type { WorkerHeartbeat } from "../../schema/wire.ts";
import { BarChart } from "./charts.tsx";
import { formatAgo, formatCount } from "./format.ts";

const TIERS = ["slot", "ram", "disk"] as const;

function OwnAdapters(props: { names: readonly string[]; org: string; tier: string }) {
  const prefix = `${props.org}/`;
  const own = props.names.filter((n) => n.startsWith(prefix));
  const others = props.names.length - own.length;
  return (
    <td data-tier={props.tier} data-count={props.names.length}>
      <strong>{props.names.length}</strong>{" "}
      {own.map((n) => (
        <span class={`tag ${props.tier}`}>{n.slice(prefix.length)}</span>
      ))}
      {others > 0 ? <span class="muted"> +{others} of other orgs</span> : null}
    </td>
  );
}

export function FleetPage(props: { heartbeats: WorkerHeartbeat[]; org: string; now: number }) {
  const beats = [...props.heartbeats].sort((a, b) =>
    a.base === b.base ? a.worker_id.localeCompare(b.worker_id) : a.base.localeCompare(b.base),
  );
  const bases = [...new Set(beats.map((b) => b.base))];
  const sum = (list: WorkerHeartbeat[], pick: (b: WorkerHeartbeat) => number) =>
    list.reduce((total, b) => total + pick(b), 0);
  return (
    <>
      <h1>Fleet</h1>
      <p class="sub">Workers with a live heartbeat (each beats every second), per base model.</p>
      <div class="cards" id="fleet-totals">
        <div class="card">
          <div class="k">Workers</div>
          <div class="v" data-total="workers">
            {beats.length}
          </div>
        </div>
        <div class="card">
          <div class="k">Queued requests</div>
          <div class="v" data-total="queue_depth">
            {formatCount(sum(beats, (b) => b.queue_depth))}
          </div>
        </div>
        <div class="card">
          <div class="k">Running sequences</div>
          <div class="v" data-total="running">
            {formatCount(sum(beats, (b) => b.running))}
          </div>
        </div>
        <div class="card">
          <div class="k">Tokens / s</div>
          <div class="v" data-total="tokens_per_s">
            {formatCount(sum(beats, (b) => b.tokens_per_s))}
          </div>
        </div>
      </div>
      {beats.length === 0 ? (
        <section>
          <p class="muted">No worker has sent a heartbeat recently.</p>
        </section>
      ) : null}
      {bases.map((base) => {
        const workers = beats.filter((b) => b.base === base);
        return (
          <section data-base={base}>
            <h2>{base}</h2>
            <BarChart
              id={`queue-${base.replace(/[^A-Za-z0-9_-]/g, "_")}`}
              label={`Queue depth and running sequences per worker of ${base}`}
              className="s-input"
              textWidth={160}
              rows={workers.map((w) => ({
                label: w.worker_id,
                title: `${w.worker_id}: ${w.queue_depth} queued, ${w.running} running`,
                value: w.queue_depth + w.running,
                text: `${w.queue_depth} queued · ${w.running} running`,
                data: { worker: w.worker_id, "queue-depth": w.queue_depth, running: w.running },
              }))}
            />
            <table class="workers">
              <thead>
                <tr>
                  <th>Worker</th>
                  <th class="num">Running</th>
                  <th class="num">Queued</th>
                  <th class="num">Free slots</th>
                  <th class="num">Tokens/s</th>
                  <th>In slots</th>
                  <th>In RAM</th>
                  <th>On disk</th>
                  <th>Heartbeat</th>
                </tr>
              </thead>
              <tbody>
                {workers.map((w) => (
                  <tr data-worker={w.worker_id}>
                    <td>
                      {w.worker_id}
                      <div class="muted">v{w.version}</div>
                    </td>
                    <td class="num">{w.running}</td>
                    <td class="num" data-queue-depth={w.queue_depth}>
                      {w.queue_depth}
                    </td>
                    <td class="num">{w.free_slots}</td>
                    <td class="num">{formatCount(w.tokens_per_s)}</td>
                    {TIERS.map((tier) => (
                      <OwnAdapters names={w.adapters[tier]} org={props.org} tier={tier} />
                    ))}
                    <td class="muted">{formatAgo(props.now - w.at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
        );
      })}
    </>
  );
}
