// What a request costs: a base model's per-million-token prices (integer micro-dollars, schema/db.ts)
// applied to its input and output tokens, input the prefix cache covered at the cached input price where
// the base has one. Money never passes through a float: the products can exceed 2^53 (a billion tokens at
// a dollar per token), so the arithmetic runs on BigInt.
//
// Rounding: the exact cost is (input − cached) × inPrice + cached × cachedPrice + output × outPrice, in
// millionths of a micro-dollar, times the batch (or priority) percent over 100 for a Batch API line (a
// priority-tier request); it is divided and
// rounded UP, once, on the request's total (not per part). A request that used tokens on a priced base is never billed 0, and no request is billed
// more than one micro-dollar ($0.000001) above its exact price.
import type { BaseModel } from "../schema/db.ts";

/** A base model's prices, as the base_models table holds them; no cached input price: the input price. */
export type Prices = Pick<BaseModel, "inputPriceMicrosPerMillion" | "outputPriceMicrosPerMillion"> &
  Partial<Pick<BaseModel, "cachedInputPriceMicrosPerMillion">>;

/** The percent of the prices a request pays: 100, a Batch API line's batch_price_percent or a priority one's priority_price_percent. */
export const FULL_PRICE_PERCENT = 100;

/** The most a price percent may be: a priority premium of up to 10× (base_models' check says the same). */
export const MAX_PRICE_PERCENT = 1000;

export interface TokenCounts {
  inputTokens: number;
  /** Of inputTokens, those a worker's prefix cache covered; default 0. */
  cachedInputTokens?: number;
  outputTokens: number;
}

/** A price or token count that is not a non-negative safe integer, or more cached tokens than input. */
export class PriceInputError extends Error {
  override readonly name = "PriceInputError";
}

const MILLION = 1_000_000n;

function exact(field: string, value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PriceInputError(`${field} must be a non-negative integer, got ${value}`);
  }
  return BigInt(value);
}

/** The cost of a request in integer micro-dollars at `percent` of the prices, rounded up once on the total. */
export function costMicros(prices: Prices, tokens: TokenCounts, percent = FULL_PRICE_PERCENT): number {
  const input = exact("inputTokens", tokens.inputTokens);
  const cached = exact("cachedInputTokens", tokens.cachedInputTokens ?? 0);
  if (cached > input) {
    throw new PriceInputError(`cachedInputTokens ${cached} exceeds inputTokens ${input}`);
  }
  const inputPrice = exact("inputPriceMicrosPerMillion", prices.inputPriceMicrosPerMillion);
  const cachedPrice =
    prices.cachedInputPriceMicrosPerMillion == null
      ? inputPrice
      : exact("cachedInputPriceMicrosPerMillion", prices.cachedInputPriceMicrosPerMillion);
  const millionths =
    (input - cached) * inputPrice +
    cached * cachedPrice +
    exact("outputTokens", tokens.outputTokens) *
      exact("outputPriceMicrosPerMillion", prices.outputPriceMicrosPerMillion);
  if (!Number.isSafeInteger(percent) || percent < 0 || percent > MAX_PRICE_PERCENT) {
    throw new PriceInputError(`percent must be an integer from 0 to ${MAX_PRICE_PERCENT}, got ${percent}`);
  }
  const divisor = MILLION * 100n;
  const micros = (millionths * BigInt(percent) + divisor - 1n) / divisor;
  // Unreachable with 32-bit token counts and prices (at most ~9.2e13 at 1000 %); checked so a number never rounds.
  if (micros > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PriceInputError(`a cost of ${micros} micro-dollars exceeds what a number holds exactly`);
  }
  return Number(micros);
}

/** Micro-dollars as dollars with all six decimals, e.g. 1_234_567 → "1.234567"; exact, no float. */
export function microsToDollars(micros: number): string {
  const value = exact("micros", micros);
  return `${value / MILLION}.${(value % MILLION).toString().padStart(6, "0")}`;
}
