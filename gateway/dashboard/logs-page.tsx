// The dashboard's logs: the org's stored chat completions (created with `store: true`) and stored Responses
// API responses, newest first, one row each — model, what the user last said, the answer's start, tokens,
// metadata — and a page per entry with every turn it answered and its answer, and a button that deletes it.
// Read by log-entries.ts.

import { formatAgo, formatCount } from "./format.ts";
import type { LogDetail, LogEntry, LogKind, LogPage, LogTurn } from "./log-entries.ts";

const KINDS: Array<[LogKind, string]> = [
  ["chat", "Chat completions"],
  ["responses", "Responses"],
];

/** At most `n` characters of a text on one line, for a table cell. */
function snippet(text: string, n = 90): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > n ? `${line.slice(0, n - 1)}…` : line;
}

function entryHref(kind: LogKind, id: string): string {
  return `/dashboard/logs/${kind}/${encodeURIComponent(id)}`;
}

function Tokens({ entry }: { entry: LogEntry }) {
  return (
    <td class="num nowrap">
      {entry.inputTokens === null ? (
        <span class="muted">–</span>
      ) : (
        `${formatCount(entry.inputTokens)} → ${formatCount(entry.outputTokens ?? 0)}`
      )}
    </td>
  );
}

function Metadata({ metadata }: { metadata: Record<string, string> }) {
  const pairs = Object.entries(metadata);
  if (pairs.length === 0) return <span class="muted">–</span>;
  return pairs.map(([key, value]) => (
    <span class="tag">
      {key}: {value}
    </span>
  ));
}

export function LogsPage(props: { kind: LogKind; page: LogPage; now: number }) {
  const { kind, page } = props;
  return (
    <>
      <h1>Logs</h1>
      <p class="sub">
        What this org's requests were asked and answered, newest first: chat completions created with{" "}
        <code>store: true</code>, and Responses API responses not created with <code>store: false</code>. Kept
        for the gateway's retention (30 days by default).
      </p>
      <p class="range">
        {KINDS.map(([k, name]) =>
          k === kind ? <strong>{name}</strong> : <a href={`/dashboard/logs?kind=${k}`}>{name}</a>,
        )}
      </p>
      <section>
        {page.entries.length === 0 ? (
          <p class="muted">Nothing stored yet.</p>
        ) : (
          <table id="logs">
            <thead>
              <tr>
                <th>Created</th>
                <th>Model</th>
                <th>Input</th>
                <th>Output</th>
                <th class="num">Tokens</th>
                <th>Status</th>
                <th>Metadata</th>
              </tr>
            </thead>
            <tbody>
              {page.entries.map((entry) => (
                <tr data-log={entry.id}>
                  <td class="nowrap">
                    <a href={entryHref(kind, entry.id)}>{formatAgo(props.now - entry.created * 1000)}</a>
                  </td>
                  <td>{entry.model}</td>
                  <td>{snippet(entry.input)}</td>
                  <td>{snippet(entry.output)}</td>
                  <Tokens entry={entry} />
                  <td>
                    <span class={`tag ${entry.status}`}>{entry.status}</span>
                  </td>
                  <td>
                    <Metadata metadata={entry.metadata} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {page.next ? (
          <p>
            <a href={`/dashboard/logs?kind=${kind}&after=${encodeURIComponent(page.next)}`} rel="next">
              Older →
            </a>
          </p>
        ) : null}
      </section>
    </>
  );
}

function Turns({ turns, label }: { turns: readonly LogTurn[]; label: string }) {
  return (
    <section>
      <h2>{label}</h2>
      <table class="turns">
        <tbody>
          {turns.map((turn) => (
            <tr data-role={turn.role}>
              <th class="nowrap">{turn.role}</th>
              <td>
                <pre class="turn">{turn.text}</pre>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function LogDetailPage(props: { kind: LogKind; detail: LogDetail; now: number }) {
  const { entry, turns, answer } = props.detail;
  return (
    <>
      <h1>
        <code>{entry.id}</code>
      </h1>
      <p class="sub">
        {entry.model} · {formatAgo(props.now - entry.created * 1000)} ·{" "}
        <span class={`tag ${entry.status}`}>{entry.status}</span>
        {entry.inputTokens === null
          ? null
          : ` · ${formatCount(entry.inputTokens)} input tokens, ${formatCount(entry.outputTokens ?? 0)} output`}{" "}
        · <Metadata metadata={entry.metadata} /> · <a href={`/dashboard/logs?kind=${props.kind}`}>all logs</a>
      </p>
      <div class="entry-actions">
        <form class="inline" method="post" action={`${entryHref(props.kind, entry.id)}/delete`}>
          <button type="submit" class="danger" data-action="delete">
            Delete
          </button>
        </form>
      </div>
      <Turns turns={turns} label="Input" />
      <Turns turns={answer} label="Output" />
    </>
  );
}
