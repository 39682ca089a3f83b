// The dashboard's batches page: the org's Batch API batches, newest first — status, how many of their
// requests are answered or failed, their files to download once they end, and a form that cancels one still
// running. The same functions as GET /v1/batches and POST /v1/batches/{id}/cancel (gateway/batches.ts).
import type { BatchObject } from "../../schema/batch-api.ts";
import { formatAgo, formatCount, percent } from "./format.ts";

function Progress({ batch }: { batch: BatchObject }) {
  const { total, completed, failed } = batch.request_counts;
  const done = completed + failed;
  return (
    <td class="nowrap" data-answered={completed} data-failed={failed} data-total={total}>
      <progress max={String(Math.max(total, 1))} value={String(done)} aria-label={`${batch.id} progress`} />{" "}
      {formatCount(done)} / {formatCount(total)}
      {total > 0 ? <span class="muted"> ({percent(done, total)})</span> : null}
    </td>
  );
}

function Files({ batch }: { batch: BatchObject }) {
  const link = (id: string | null, label: string) =>
    id ? (
      <a href={`/dashboard/files/${encodeURIComponent(id)}/content`} data-file={label}>
        {label}
      </a>
    ) : null;
  const output = link(batch.output_file_id, "output");
  const errors = link(batch.error_file_id, "errors");
  return (
    <td>
      {output}
      {output && errors ? " · " : null}
      {errors}
      {!output && !errors ? <span class="muted">–</span> : null}
    </td>
  );
}

export function BatchesPage(props: { batches: readonly BatchObject[]; now: number }) {
  return (
    <>
      <h1>Batches</h1>
      <p class="sub">
        Batch API batches of this org, newest first: each request runs as its own request, billed at the
        base's batch price. Create them with <code>luminet batches create</code> or POST /v1/batches.
      </p>
      <section>
        {props.batches.length === 0 ? (
          <p class="muted">No batches yet.</p>
        ) : (
          <table id="batches">
            <thead>
              <tr>
                <th>Batch</th>
                <th>Status</th>
                <th>Endpoint</th>
                <th>Requests</th>
                <th>Failed</th>
                <th>Created</th>
                <th>Files</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {props.batches.map((batch) => (
                <tr data-batch={batch.id} data-status={batch.status}>
                  <td>
                    <code>{batch.id}</code>
                  </td>
                  <td>
                    <span class={`tag ${batch.status}`}>{batch.status}</span>
                  </td>
                  <td>{batch.endpoint}</td>
                  <Progress batch={batch} />
                  <td>{formatCount(batch.request_counts.failed)}</td>
                  <td class="nowrap">{formatAgo(props.now - batch.created_at * 1000)}</td>
                  <Files batch={batch} />
                  <td class="actions">
                    {batch.status === "in_progress" ? (
                      <form
                        class="inline"
                        method="post"
                        action={`/dashboard/batches/${encodeURIComponent(batch.id)}/cancel`}
                      >
                        <button type="submit" class="danger" data-action="cancel">
                          Cancel
                        </button>
                      </form>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
