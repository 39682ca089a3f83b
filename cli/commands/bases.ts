// `luminet bases ...`: the base models in DATABASE_URL and their prices (input, output, optionally a lower
// one for input a worker's prefix cache covered, the percent of them a Batch API line pays and the percent
// a priority-tier request pays). Gateways register a base when they first serve it,
// at price 0; until a price is set its requests are metered but cost nothing.
import { type Command, InvalidArgumentError } from "commander";
import { eq } from "drizzle-orm";
import { MAX_PRICE_PERCENT, microsToDollars } from "../../meter/prices.ts";
import { baseModels } from "../../schema/db.ts";
import { table } from "../table.ts";
import { withDb } from "../with-db.ts";

/** "0.15" US dollars per million tokens → 150000 micro-dollars, exactly (no float arithmetic). */
export function parseDollarsPerMillion(text: string): number {
  const match = /^(\d{1,9})(?:\.(\d{1,6}))?$/.exec(text.trim());
  if (!match) {
    throw new InvalidArgumentError(
      `expected US dollars per million tokens with at most 6 decimals, got "${text}"`,
    );
  }
  return Number(match[1]) * 1_000_000 + Number((match[2] ?? "").padEnd(6, "0"));
}

/** "50" → 50: the percent of the prices a Batch API line pays, an integer from 0 to 100. */
export function parsePercent(text: string): number {
  if (!/^\d{1,3}$/.test(text.trim()) || Number(text) > 100) {
    throw new InvalidArgumentError(`expected a whole percent from 0 to 100, got "${text}"`);
  }
  return Number(text);
}

/** "175" → 175: the percent of the prices a priority-tier request pays, an integer from 100 to 1000. */
export function parsePriorityPercent(text: string): number {
  if (!/^\d{3,4}$/.test(text.trim()) || Number(text) < 100 || Number(text) > MAX_PRICE_PERCENT) {
    throw new InvalidArgumentError(
      `expected a whole percent from 100 to ${MAX_PRICE_PERCENT}, got "${text}"`,
    );
  }
  return Number(text);
}

/** A base as `bases list --json` prints it: snake_case and Unix seconds, as the CLI's other JSON is. */
function baseRecord(row: typeof baseModels.$inferSelect) {
  const a = row.architecture;
  return {
    name: row.name,
    context_length: row.contextLength,
    architecture: {
      family: a.family,
      layers: a.layers,
      hidden_size: a.hiddenSize,
      intermediate_size: a.intermediateSize,
      attention_heads: a.attentionHeads,
      kv_heads: a.kvHeads,
      head_dim: a.headDim,
      vocab_size: a.vocabSize,
    },
    input_price_micros_per_million: row.inputPriceMicrosPerMillion,
    cached_input_price_micros_per_million: row.cachedInputPriceMicrosPerMillion,
    output_price_micros_per_million: row.outputPriceMicrosPerMillion,
    batch_price_percent: row.batchPricePercent,
    priority_price_percent: row.priorityPricePercent,
    created_at: Math.floor(row.createdAt.getTime() / 1000),
  };
}

export function registerBases(program: Command): void {
  const bases = program.command("bases").description("base models and their per-token prices");
  bases
    .command("list")
    .description("list base models with context length and prices")
    .option("--json", "print JSON")
    .action((flags: { json?: boolean }) =>
      withDb("bases list", async (db) => {
        const rows = await db.select().from(baseModels).orderBy(baseModels.name);
        if (flags.json) {
          process.stdout.write(`${JSON.stringify({ object: "list", data: rows.map(baseRecord) })}\n`);
          return;
        }
        const header = [
          "base",
          "context",
          "$ per 1M input",
          "$ per 1M cached input",
          "$ per 1M output",
          "batch %",
          "priority %",
        ];
        const cells = rows.map((r) => [
          r.name,
          String(r.contextLength),
          microsToDollars(r.inputPriceMicrosPerMillion),
          r.cachedInputPriceMicrosPerMillion === null
            ? "(input)"
            : microsToDollars(r.cachedInputPriceMicrosPerMillion),
          microsToDollars(r.outputPriceMicrosPerMillion),
          String(r.batchPricePercent),
          String(r.priorityPricePercent),
        ]);
        process.stdout.write(`${table(header, cells, 1)}\n`);
      }),
    );
  bases
    .command("set-price <name>")
    .description("set a base model's price; it applies to requests metered from now on")
    .requiredOption("--input <usd>", "US dollars per million input tokens, e.g. 0.15", parseDollarsPerMillion)
    .requiredOption(
      "--output <usd>",
      "US dollars per million output tokens, e.g. 0.60",
      parseDollarsPerMillion,
    )
    .option(
      "--cached-input <usd|none>",
      "US dollars per million input tokens a worker's prefix cache covered, at most --input; none: the input price (default: keep the base's current one)",
      (text: string) => (text === "none" ? "none" : parseDollarsPerMillion(text)),
    )
    .option(
      "--batch-percent <percent>",
      "the percent of these prices a Batch API line pays, e.g. 50 (default: keep the base's current one, 100 when new)",
      parsePercent,
    )
    .option(
      "--priority-percent <percent>",
      "the percent of these prices a request at the priority service tier pays, e.g. 175 (default: keep the base's current one, 100 when new)",
      parsePriorityPercent,
    )
    .action(
      (
        name: string,
        flags: {
          input: number;
          output: number;
          cachedInput?: number | "none";
          batchPercent?: number;
          priorityPercent?: number;
        },
      ) =>
        withDb("bases set-price", async (db) => {
          const [base] = await db
            .select({
              cached: baseModels.cachedInputPriceMicrosPerMillion,
              batch: baseModels.batchPricePercent,
              priority: baseModels.priorityPricePercent,
            })
            .from(baseModels)
            .where(eq(baseModels.name, name));
          if (!base)
            throw new Error(`no base model "${name}"; a gateway registers a base when it first serves it`);
          const cachedPrice =
            flags.cachedInput === undefined
              ? base.cached
              : flags.cachedInput === "none"
                ? null
                : flags.cachedInput;
          if (cachedPrice !== null && cachedPrice > flags.input) {
            const which =
              flags.cachedInput === undefined ? "the base's cached input price" : "--cached-input";
            throw new Error(
              `${which} ($${microsToDollars(cachedPrice)}) must not exceed --input ($${microsToDollars(flags.input)}); set --cached-input too`,
            );
          }
          await db
            .update(baseModels)
            .set({
              inputPriceMicrosPerMillion: flags.input,
              outputPriceMicrosPerMillion: flags.output,
              cachedInputPriceMicrosPerMillion: cachedPrice,
              batchPricePercent: flags.batchPercent ?? base.batch,
              priorityPricePercent: flags.priorityPercent ?? base.priority,
            })
            .where(eq(baseModels.name, name));
          const cached =
            cachedPrice === null
              ? "cached input at the input price"
              : `$${microsToDollars(cachedPrice)} per 1M cached input tokens`;
          process.stdout.write(
            `${name}: $${microsToDollars(flags.input)} per 1M input tokens, ${cached}, $${microsToDollars(flags.output)} per 1M output tokens; batch lines pay ${flags.batchPercent ?? base.batch} %, priority requests ${flags.priorityPercent ?? base.priority} %\n`,
          );
        }),
    );
}
