// The dashboard's adapters page: the org's adapters with where workers hold them now, and for admin keys
// forms that pin or unpin them, set an alias version's traffic weight and delete them. The forms post to
// the dashboard, which calls the same functions as the adapter admin API (gateway/adapter-admin.ts), with
// the same checks and errors. Plain HTML forms: the page needs no script.
import { humanBytes } from "../../core/human-bytes.ts";
import type { AdapterObject } from "../../schema/adapter-api.ts";
import { formatCount } from "./format.ts";

function actionUrl(adapter: AdapterObject, action: "pin" | "weight" | "delete"): string {
  return `/dashboard/adapters/${encodeURIComponent(adapter.name)}/${action}`;
}

function Actions({ adapter }: { adapter: AdapterObject }) {
  return (
    <td class="actions">
      <form class="inline" method="post" action={actionUrl(adapter, "pin")}>
        <input type="hidden" name="pinned" value={adapter.pinned ? "false" : "true"} />
        <button type="submit" class={adapter.pinned ? "" : "primary"} data-action="pin">
          {adapter.pinned ? "Unpin" : "Pin"}
        </button>
      </form>{" "}
      {adapter.alias !== null ? (
        <form class="inline" method="post" action={actionUrl(adapter, "weight")}>
          <input
            type="number"
            name="weight"
            min="0"
            max="100"
            step="1"
            value={String(adapter.traffic_weight)}
            aria-label={`traffic weight of ${adapter.name}`}
          />
          <button type="submit" data-action="weight">
            Set weight
          </button>
        </form>
      ) : null}{" "}
      <form class="inline" method="post" action={actionUrl(adapter, "delete")}>
        <label class="muted">
          <input type="checkbox" name="confirm" value="yes" required /> sure
        </label>
        <label class="muted">
          <input type="checkbox" name="force" value="yes" /> force
        </label>
        <button type="submit" class="danger" data-action="delete">
          Delete
        </button>
      </form>
    </td>
  );
}

export function AdaptersPage(props: { adapters: AdapterObject[]; admin: boolean }) {
  return (
    <>
      <h1>Adapters</h1>
      <p class="sub">
        Your org's adapters and where workers hold them now.{" "}
        {props.admin
          ? "Pinned adapters stay in a slot on every worker of their base (at most 16 per base); an alias splits its traffic among its versions by weight."
          : null}
      </p>
      <section>
        {props.adapters.length === 0 ? (
          <p class="muted">No adapters yet: upload one with `luminet adapters create`.</p>
        ) : (
          <table id="adapters">
            <thead>
              <tr>
                <th>Adapter</th>
                <th>Base</th>
                <th>Alias · weight</th>
                <th class="num">Rank</th>
                <th class="num">Size</th>
                <th>Status</th>
                <th>Pinned</th>
                <th>Resident</th>
                {props.admin ? <th>Actions</th> : null}
              </tr>
            </thead>
            <tbody>
              {props.adapters.map((a) => (
                <tr data-adapter={a.name} data-pinned={String(a.pinned)} data-weight={a.traffic_weight}>
                  <td class="name">
                    <strong>{a.name}</strong>
                    <div class="muted">{a.model}</div>
                  </td>
                  <td class="name">{a.base}</td>
                  <td class="name">
                    {a.alias === null ? <span class="muted">–</span> : `${a.alias} · ${a.traffic_weight}`}
                  </td>
                  <td class="num">{formatCount(a.rank)}</td>
                  <td class="num">{humanBytes(a.bytes)}</td>
                  <td>{a.status}</td>
                  <td>{a.pinned ? "pinned" : <span class="muted">no</span>}</td>
                  <td>
                    {a.resident.length === 0 ? (
                      <span class="muted">not resident</span>
                    ) : (
                      a.resident.map((r) => (
                        <span class={`tag ${r.tier}`}>{`${r.worker_id}: ${r.tier}`}</span>
                      ))
                    )}
                  </td>
                  {props.admin ? <Actions adapter={a} /> : null}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
