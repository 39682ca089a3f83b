// The dashboard's usage page: the org's tokens and cost over the last 7, 30 or 90 UTC days, as totals,
// a column per day (input and output tokens stacked; cost), the adapters by tokens, what each API key
// spent, what each service tier cost (and whether the org may use the priority tier), the monthly quota
// when the org has one, and what the org stores against its storage limits. The numbers are the usage
// report GET /v1/usage returns (meter/usage-report.ts).
import type { QuotaStatus } from "../../meter/token-quota.ts";
import type { UsageReport, UsageTotals } from "../../meter/usage-report.ts";
import { BarChart, type Column, ColumnChart } from "./charts.tsx";
import { formatCompact, formatCount, formatUsd, formatUsdAxis, microsToUsd, percent } from "./format.ts";
import { StorageCard, type StorageHeld } from "./storage-card.tsx";

export const USAGE_PERIODS = [7, 30, 90] as const;
export type UsagePeriod = (typeof USAGE_PERIODS)[number];

const DAY_MS = 86_400_000;

/** The period's UTC days, oldest first, ending today, with its [start, end) instants. */
export function periodDays(days: number, now: number): { days: string[]; start: Date; end: Date } {
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const start = today - (days - 1) * DAY_MS;
  return {
    days: Array.from({ length: days }, (_, i) => new Date(start + i * DAY_MS).toISOString().slice(0, 10)),
    start: new Date(start),
    end: new Date(today + DAY_MS),
  };
}

export interface UsagePageData {
  period: UsagePeriod;
  days: string[];
  byDay: UsageReport;
  byAdapter: UsageReport;
  byKey: UsageReport;
  byTier: UsageReport;
  /** Key id → "prefix… (name)"; empty for a key without the admin scope, which sees key ids. */
  keyNames: ReadonlyMap<string, string>;
  quota: QuotaStatus | null;
  /** The org's requests for service_tier "priority" get that tier (orgs.priority_tier). */
  priorityTier: boolean;
  storage: readonly StorageHeld[];
}

const BASE_ONLY = "(base model)";

function QuotaCard({ quota }: { quota: QuotaStatus }) {
  if (quota.quota === null) return null;
  const share = (n: number) => `${Math.min(100, (n / Math.max(1, quota.quota ?? 1)) * 100).toFixed(2)}%`;
  return (
    <section id="quota">
      <h2>Monthly token quota · {quota.month}</h2>
      <div class="meter" title={`${formatCount(quota.used)} used, ${formatCount(quota.reserved)} held`}>
        <i class="used" style={`width:${share(quota.used)}`} />
        <i class="held" style={`width:${share(quota.reserved)}`} />
      </div>
      <div class="muted">
        {formatCount(quota.used)} used · {formatCount(quota.reserved)} held by requests in flight ·{" "}
        <strong data-remaining={quota.remaining ?? ""}>{formatCount(quota.remaining ?? 0)}</strong> of{" "}
        {formatCount(quota.quota)} left
      </div>
      {quota.remaining === 0 ? (
        <p class="error" id="quota-spent" role="alert">
          The org's tokens for {quota.month} are spent: its requests are refused (429) until the month ends or
          the operator raises the quota (luminet quota set).
        </p>
      ) : null}
    </section>
  );
}

export function UsagePage({ data }: { data: UsagePageData }) {
  const { byDay, byAdapter, period } = data;
  const rows = new Map(byDay.data.map((row) => [row.day, row]));
  const tokenColumns: Column[] = [];
  const costColumns: Column[] = [];
  for (const day of data.days) {
    const row = rows.get(day);
    const input = row?.input_tokens ?? 0;
    const output = row?.output_tokens ?? 0;
    const cost = row?.cost_micros ?? 0;
    const label = day.slice(5);
    tokenColumns.push({
      label,
      title: `${day}: ${formatCount(input)} input + ${formatCount(output)} output tokens, ${formatCount(row?.requests ?? 0)} requests`,
      values: [input, output],
      data: { day, input: input, output: output, requests: row?.requests ?? 0 },
    });
    costColumns.push({
      label,
      title: `${day}: ${microsToUsd(cost)}`,
      values: [cost],
      data: { day, "cost-micros": cost },
    });
  }
  const adapters = [...byAdapter.data].sort((a, b) => b.total_tokens - a.total_tokens);
  const total = byDay.total;
  return (
    <>
      <h1>Usage</h1>
      <p class="sub range">
        UTC days {data.days[0]} to {data.days.at(-1)} · show the last
        {USAGE_PERIODS.map((p) =>
          p === period ? <strong>{p} days</strong> : <a href={`/dashboard?days=${p}`}>{p} days</a>,
        )}
      </p>
      <div class="cards" id="totals">
        <div class="card">
          <div class="k">Requests</div>
          <div class="v" data-total="requests">
            {formatCount(total.requests)}
          </div>
        </div>
        <div class="card">
          <div class="k">Input tokens</div>
          <div class="v" data-total="input_tokens">
            {formatCount(total.input_tokens)}
          </div>
          <div class="n">
            <span data-total="cached_input_tokens">{formatCount(total.cached_input_tokens)}</span> from the
            prompt cache
            {total.input_tokens > 0 ? ` (${percent(total.cached_input_tokens, total.input_tokens)})` : ""}
          </div>
        </div>
        <div class="card">
          <div class="k">Output tokens</div>
          <div class="v" data-total="output_tokens">
            {formatCount(total.output_tokens)}
          </div>
        </div>
        <div class="card">
          <div class="k">Cost</div>
          <div class="v" data-total="cost_usd">
            {formatUsd(total.cost_usd)}
          </div>
          <div class="n">base-model prices; adapters are free</div>
        </div>
      </div>
      {data.quota ? <QuotaCard quota={data.quota} /> : null}
      <section>
        <h2>Tokens by day</h2>
        <ColumnChart
          id="tokens-by-day"
          label={`Input and output tokens per UTC day, last ${period} days`}
          columns={tokenColumns}
          series={[
            { name: "input tokens", className: "s-input" },
            { name: "output tokens", className: "s-output" },
          ]}
        />
      </section>
      <section>
        <h2>Cost by day</h2>
        <ColumnChart
          id="cost-by-day"
          label={`Cost per UTC day, last ${period} days`}
          columns={costColumns}
          series={[{ name: "cost", className: "s-cost" }]}
          format={formatUsdAxis}
        />
      </section>
      <section>
        <h2>Tokens by adapter</h2>
        {adapters.length === 0 ? (
          <p class="muted">No requests in this period.</p>
        ) : (
          <BarChart
            id="tokens-by-adapter"
            label={`Tokens per adapter, last ${period} days`}
            className="s-adapter"
            rows={adapters.slice(0, 12).map((row) => ({
              label: row.adapter ?? BASE_ONLY,
              title: `${row.adapter ?? BASE_ONLY}: ${formatCount(row.total_tokens)} tokens, ${formatCount(row.requests)} requests`,
              value: row.total_tokens,
              text: formatCompact(row.total_tokens),
              data: { adapter: row.adapter ?? "", tokens: row.total_tokens },
            }))}
          />
        )}
      </section>
      <section>
        <h2>Top adapters</h2>
        {adapters.length === 0 ? (
          <p class="muted">No requests in this period.</p>
        ) : (
          <table id="top-adapters">
            <thead>
              <tr>
                <th>Adapter</th>
                <TokenHeads />
                <th class="num">Share of tokens</th>
                <th class="num">Cost</th>
              </tr>
            </thead>
            <tbody>
              {adapters.map((row) => (
                <tr data-adapter={row.adapter ?? ""}>
                  <td>{row.adapter ?? <span class="muted">{BASE_ONLY}</span>}</td>
                  <TokenCells row={row} />
                  <td class="num">
                    {total.total_tokens > 0 ? percent(row.total_tokens, total.total_tokens) : "–"}
                  </td>
                  <CostCell row={row} />
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <KeyTable byKey={data.byKey} keyNames={data.keyNames} />
      <TierTable byTier={data.byTier} />
      {data.priorityTier ? null : (
        <p class="muted" id="priority-withheld">
          The priority tier is not available to this org: requests for it run, and are billed, at the standard
          tier, and their answers say "default".
        </p>
      )}
      <StorageCard storage={data.storage} />
    </>
  );
}

/** The count columns every usage table has: requests, input tokens (and the cached part), output tokens. */
function TokenHeads() {
  return (
    <>
      <th class="num">Requests</th>
      <th class="num">Input tokens</th>
      <th class="num">Cached input</th>
      <th class="num">Output tokens</th>
    </>
  );
}

function TokenCells({ row }: { row: UsageTotals }) {
  return (
    <>
      <td class="num">{formatCount(row.requests)}</td>
      <td class="num">{formatCount(row.input_tokens)}</td>
      <td class="num" data-cached-input={row.cached_input_tokens}>
        {formatCount(row.cached_input_tokens)}
      </td>
      <td class="num">{formatCount(row.output_tokens)}</td>
    </>
  );
}

function CostCell({ row }: { row: UsageTotals }) {
  return (
    <td class="num" data-cost-usd={row.cost_usd}>
      {formatUsd(row.cost_usd)}
    </td>
  );
}

/** A usage table of one grouping: a row per group (its label, counts and cost), `data-<attribute>` its key. */
function GroupTable(props: {
  id: string;
  column: string;
  attribute: string;
  rows: readonly { group: string; label: string; totals: UsageTotals }[];
}) {
  return (
    <table id={props.id}>
      <thead>
        <tr>
          <th>{props.column}</th>
          <TokenHeads />
          <th class="num">Cost</th>
        </tr>
      </thead>
      <tbody>
        {props.rows.map(({ group, label, totals }) => (
          <tr {...{ [`data-${props.attribute}`]: group }}>
            <td>{label}</td>
            <TokenCells row={totals} />
            <CostCell row={totals} />
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** What each API key spent in the period, most expensive first. */
function KeyTable({ byKey, keyNames }: { byKey: UsageReport; keyNames: ReadonlyMap<string, string> }) {
  const keys = [...byKey.data].sort(
    (a, b) => b.cost_micros - a.cost_micros || b.total_tokens - a.total_tokens,
  );
  return (
    <section>
      <h2>By API key</h2>
      {keys.length === 0 ? (
        <p class="muted">No requests in this period.</p>
      ) : (
        <GroupTable
          id="by-key"
          column="API key"
          attribute="key"
          rows={keys.map((row) => ({
            group: row.api_key_id ?? "",
            label: keyNames.get(row.api_key_id ?? "") ?? row.api_key_id ?? "",
            totals: row,
          }))}
        />
      )}
    </section>
  );
}

/** The service tiers as the page names them (the report's service_tier values). */
const TIER_NAMES: Record<string, string> = {
  default: "Standard",
  batch: "Batch and flex",
  priority: "Priority",
};

/** What was billed at each tier's price: standard, batch (Batch API lines and flex) and priority. */
function TierTable({ byTier }: { byTier: UsageReport }) {
  if (byTier.data.length === 0) return null;
  return (
    <section>
      <h2>By service tier</h2>
      <GroupTable
        id="by-tier"
        column="Tier"
        attribute="tier"
        rows={byTier.data.map((row) => ({
          group: row.service_tier ?? "",
          label: TIER_NAMES[row.service_tier ?? ""] ?? row.service_tier ?? "",
          totals: row,
        }))}
      />
    </section>
  );
}
