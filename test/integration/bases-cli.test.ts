// `luminet bases`: prices are set exactly in micro-dollars, and a bad price or an unknown base changes nothing.
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDollarsPerMillion, registerBases } from "../../cli/commands/bases.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { baseModels } from "../../schema/db.ts";
import { luminetInProcess } from "../support/luminet-command.ts";
import { ownDatabase } from "../support/own-database.ts";

let url: string;
let drop: () => Promise<void>;

/** `luminet bases ...` on the test's database, in this process (a process per command costs seconds). */
function luminet(...args: string[]) {
  return luminetInProcess(registerBases, ["bases", ...args], { DATABASE_URL: url, LOG_LEVEL: "silent" });
}

/** The base's row as the CLI left it. */
async function baseRow() {
  const db: Db = await openDb(url);
  try {
    const [row] = await db.select().from(baseModels).where(eq(baseModels.name, "meta/tiny"));
    return row!;
  } finally {
    await db.close();
  }
}

async function prices(): Promise<[number, number, number | null]> {
  const row = await baseRow();
  return [
    row.inputPriceMicrosPerMillion,
    row.outputPriceMicrosPerMillion,
    row.cachedInputPriceMicrosPerMillion,
  ];
}

const batchPercent = async () => (await baseRow()).batchPricePercent;

beforeAll(async () => {
  ({ url, drop } = await ownDatabase("bases_cli"));
  const db = await openDb(url);
  await migrate(db);
  await db.insert(baseModels).values({
    name: "meta/tiny",
    architecture: { layers: 2, hidden: 64, heads: 4, kvHeads: 2, vocab: 512 } as never,
    contextLength: 2048,
    inputPriceMicrosPerMillion: 0,
    outputPriceMicrosPerMillion: 0,
  });
  await db.close();
});

afterAll(() => drop());

describe("luminet bases", () => {
  it("parses dollars per million tokens into exact micro-dollars", () => {
    expect(parseDollarsPerMillion("0.15")).toBe(150_000);
    expect(parseDollarsPerMillion("2")).toBe(2_000_000);
    expect(parseDollarsPerMillion("0.000001")).toBe(1);
    expect(() => parseDollarsPerMillion("0.0000001")).toThrow(/at most 6 decimals/);
    expect(() => parseDollarsPerMillion("-1")).toThrow(/US dollars/);
  });

  it("sets a base's prices and lists them", async () => {
    const set = await luminet("set-price", "meta/tiny", "--input", "0.15", "--output", "0.6");
    expect(set.code, set.stderr).toBe(0);
    expect(await prices()).toEqual([150_000, 600_000, null]);
    const list = await luminet("list");
    expect(list.stdout).toMatch(/meta\/tiny\s+2048\s+0\.150000\s+\(input\)\s+0\.600000/);
  });

  it("sets a lower price for cached input, keeps it when set-price leaves it out, and clears it with none", async () => {
    const set = await luminet(
      "set-price",
      "meta/tiny",
      "--input",
      "0.15",
      "--cached-input",
      "0.075",
      "--output",
      "0.6",
    );
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain("$0.075000 per 1M cached input tokens");
    expect(await prices()).toEqual([150_000, 600_000, 75_000]);
    expect((await luminet("list")).stdout).toMatch(/meta\/tiny\s+2048\s+0\.150000\s+0\.075000\s+0\.600000/);
    expect((await luminet("set-price", "meta/tiny", "--input", "0.2", "--output", "0.6")).code).toBe(0);
    expect(await prices()).toEqual([200_000, 600_000, 75_000]);
    // A new input price below the kept cached one is refused until the cached one moves too.
    const below = await luminet("set-price", "meta/tiny", "--input", "0.05", "--output", "0.6");
    expect(below.code).not.toBe(0);
    expect(below.stderr).toContain(
      "the base's cached input price ($0.075000) must not exceed --input ($0.050000)",
    );
    expect(await prices()).toEqual([200_000, 600_000, 75_000]);
    const cleared = await luminet(
      "set-price",
      "meta/tiny",
      "--input",
      "0.15",
      "--cached-input",
      "none",
      "--output",
      "0.6",
    );
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(cleared.stdout).toContain("cached input at the input price");
    expect(await prices()).toEqual([150_000, 600_000, null]);
  });

  it("sets the percent a batch line pays, keeps it when set-price leaves it out, and refuses one past 100", async () => {
    expect(await batchPercent()).toBe(100);
    const set = await luminet(
      "set-price",
      "meta/tiny",
      "--input",
      "0.15",
      "--output",
      "0.6",
      "--batch-percent",
      "50",
    );
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain("batch lines pay 50 %");
    expect(await batchPercent()).toBe(50);
    expect((await luminet("list")).stdout).toMatch(
      /meta\/tiny\s+2048\s+0\.150000\s+\(input\)\s+0\.600000\s+50\s+100\n/,
    );
    expect((await luminet("set-price", "meta/tiny", "--input", "0.2", "--output", "0.6")).code).toBe(0);
    expect(await batchPercent()).toBe(50);
    const over = await luminet(
      "set-price",
      "meta/tiny",
      "--input",
      "0.2",
      "--output",
      "0.6",
      "--batch-percent",
      "101",
    );
    expect(over.code).not.toBe(0);
    expect(over.stderr).toContain("expected a whole percent from 0 to 100");
    expect(await batchPercent()).toBe(50);
  });

  it("sets the percent a priority-tier request pays, keeps it when left out, and refuses one outside 100..1000", async () => {
    const priorityPercent = async () => (await baseRow()).priorityPricePercent;
    expect(await priorityPercent()).toBe(100);
    const prices = ["set-price", "meta/tiny", "--input", "0.2", "--output", "0.6"];
    const set = await luminet(...prices, "--priority-percent", "175");
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain("priority requests 175 %");
    expect((await luminet("list")).stdout).toMatch(/meta\/tiny\s+2048\s+\S+\s+\S+\s+\S+\s+\d+\s+175\n/);
    expect((await luminet(...prices)).code).toBe(0);
    expect(await priorityPercent()).toBe(175);
    for (const bad of ["99", "1001", "1.5"]) {
      const refused = await luminet(...prices, "--priority-percent", bad);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("expected a whole percent from 100 to 1000");
    }
    expect(await priorityPercent()).toBe(175);
  });

  it("lists the bases as a table: each column lined up under its header, the numbers to the right", async () => {
    const prices = ["--input", "0.15", "--cached-input", "none", "--output", "0.6"];
    const percents = ["--batch-percent", "50", "--priority-percent", "175"];
    expect((await luminet("set-price", "meta/tiny", ...prices, ...percents)).code).toBe(0);
    const list = await luminet("list");
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe(
      [
        "base       context  $ per 1M input  $ per 1M cached input  $ per 1M output  batch %  priority %",
        "meta/tiny     2048        0.150000                (input)         0.600000       50         175",
        "",
      ].join("\n"),
    );
  });

  it("lists the bases as JSON on one line: snake_case fields and Unix seconds, as the CLI's other lists", async () => {
    const list = await luminet("list", "--json");
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.trimEnd().split("\n")).toHaveLength(1);
    const printed = JSON.parse(list.stdout);
    expect(printed).toMatchObject({
      object: "list",
      data: [
        {
          name: "meta/tiny",
          context_length: 2048,
          architecture: { layers: 2 },
          input_price_micros_per_million: 150_000,
          output_price_micros_per_million: 600_000,
          batch_price_percent: 50,
          priority_price_percent: 175,
        },
      ],
    });
    const [base] = printed.data;
    expect(Object.keys(base).every((key) => /^[a-z_]+$/.test(key))).toBe(true);
    expect(base.created_at).toBe(Math.floor((await baseRow()).createdAt.getTime() / 1000));
  });

  it("refuses an unknown base or a bad price and changes nothing", async () => {
    const before = await prices();
    const unknown = await luminet("set-price", "meta/nope", "--input", "1", "--output", "1");
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('no base model "meta/nope"');
    const bad = await luminet("set-price", "meta/tiny", "--input", "1.2345678", "--output", "1");
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("at most 6 decimals");
    const dearer = await luminet(
      "set-price",
      "meta/tiny",
      "--input",
      "0.1",
      "--cached-input",
      "0.2",
      "--output",
      "1",
    );
    expect(dearer.code).not.toBe(0);
    expect(dearer.stderr).toContain("--cached-input ($0.200000) must not exceed --input ($0.100000)");
    expect(await prices()).toEqual(before);
  });
});
