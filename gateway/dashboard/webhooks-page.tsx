// The dashboard's webhooks page, for admin keys: the org's endpoints with a form that registers one (its
// signing secret shown on the page that answers it, once) and a button that deletes one, and the latest
// deliveries — sent, being retried (with the last error and the next try) or given up. The forms call the
// same functions as the webhook admin API (gateway/webhooks.ts), with the same checks and errors.
import { WEBHOOK_EVENT_TYPES, type WebhookObject } from "../../schema/webhook-api.ts";
import type { DeliveryView } from "../webhooks.ts";
import { formatAgo, formatSpan } from "./format.ts";

function Endpoints({ endpoints, now }: { endpoints: readonly WebhookObject[]; now: number }) {
  if (endpoints.length === 0) return <p class="muted">No endpoints yet.</p>;
  return (
    <table id="webhooks">
      <thead>
        <tr>
          <th>Endpoint</th>
          <th>URL</th>
          <th>Events</th>
          <th>Created</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {endpoints.map((endpoint) => (
          <tr data-webhook={endpoint.id}>
            <td>
              <code>{endpoint.id}</code>
            </td>
            <td>{endpoint.url}</td>
            <td>
              {endpoint.events === null ? (
                <span class="muted">all</span>
              ) : (
                endpoint.events.map((type) => <span class="tag">{type}</span>)
              )}
            </td>
            <td class="nowrap">{formatAgo(now - endpoint.created_at * 1000)}</td>
            <td class="actions">
              <form
                class="inline"
                method="post"
                action={`/dashboard/webhooks/${encodeURIComponent(endpoint.id)}/delete`}
              >
                <button type="submit" class="danger" data-action="delete">
                  Delete
                </button>
              </form>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Deliveries({ deliveries, now }: { deliveries: readonly DeliveryView[]; now: number }) {
  if (deliveries.length === 0) return <p class="muted">Nothing sent yet.</p>;
  return (
    <table id="deliveries">
      <thead>
        <tr>
          <th>Event</th>
          <th>Of</th>
          <th>Endpoint</th>
          <th>State</th>
          <th class="num">Attempts</th>
          <th>Last error</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {deliveries.map((d) => (
          <tr data-event={d.eventId} data-endpoint={d.endpointId} data-state={d.state}>
            <td>{d.type}</td>
            <td>
              <code>{d.subject}</code>
            </td>
            <td>
              <code>{d.endpointId}</code>
            </td>
            <td class="nowrap">
              <span
                class={`tag ${d.state === "delivered" ? "completed" : d.state === "failed" ? "expired" : ""}`}
              >
                {d.state}
              </span>
              {d.state === "retrying" ? (
                <span class="muted"> next in {formatSpan(d.nextAttemptAt.getTime() - now)}</span>
              ) : null}
            </td>
            <td class="num">{d.attempts}</td>
            <td>{d.lastError ?? <span class="muted">–</span>}</td>
            <td class="nowrap">{formatAgo(now - d.createdAt.getTime())}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function WebhooksPage(props: {
  endpoints: readonly WebhookObject[];
  deliveries: readonly DeliveryView[];
  now: number;
}) {
  return (
    <>
      <h1>Webhooks</h1>
      <p class="sub">
        Where this org hears that its batches and background responses ended: OpenAI's events, signed as
        OpenAI signs them (the OpenAI SDKs' <code>webhooks.unwrap</code> checks them), retried for 72 hours.
        The same as <code>/v1/webhooks</code> and <code>luminet webhooks</code>.
      </p>
      <section>
        <h2>Endpoints</h2>
        <Endpoints endpoints={props.endpoints} now={props.now} />
      </section>
      <section>
        <h2>Add an endpoint</h2>
        <form method="post" action="/dashboard/webhooks" id="add-webhook">
          <p>
            <label>
              URL <input type="url" name="url" required size={60} placeholder="https://example.com/luminet" />
            </label>
          </p>
          <p>
            {WEBHOOK_EVENT_TYPES.map((type) => (
              <label class="nowrap">
                <input type="checkbox" name="events" value={type} /> {type}{" "}
              </label>
            ))}
            <span class="muted"> (none ticked: all)</span>
          </p>
          <button type="submit" class="primary" data-action="add">
            Add
          </button>
        </form>
      </section>
      <section>
        <h2>Latest deliveries</h2>
        <Deliveries deliveries={props.deliveries} now={props.now} />
      </section>
    </>
  );
}
