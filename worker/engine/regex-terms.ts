// Regular expressions as terms with Brzozowski derivatives: the derivative of a term by a character is the
// term for what may follow it, so an automaton's states are terms and its moves derivatives
// (string-automaton.ts explores them once). Intersection and complement are terms too, which is how
// lookaheads, `$` inside them and a `format` beside a `pattern` become plain automata. Terms are interned
// (one object per distinct term) and kept in a normal form — unions and intersections flattened, sorted
// and without repeats, concatenations nested to the right — so a term's derivatives are finitely many.
import { type CharRanges, MAX_CODE_POINT } from "./regex-syntax.ts";

export type Term =
  | TermBase<"none">
  | TermBase<"empty">
  | (TermBase<"chars"> & { ranges: CharRanges })
  | (TermBase<"cat"> & { head: Term; tail: Term })
  | (TermBase<"or"> & { terms: Term[] })
  | (TermBase<"and"> & { terms: Term[] })
  | (TermBase<"not"> & { term: Term })
  | (TermBase<"star"> & { term: Term });

interface TermBase<K extends string> {
  kind: K;
  id: number;
  /** Whether the term matches the empty string. */
  nullable: boolean;
}

/** Where membership in some character set of the term changes: every character between two of these moves alike. */
const boundariesCache = new WeakMap<Term, number[]>();

/** More derivative steps than one automaton may take (see Terms.work). */
export class TermBudgetError extends Error {
  override readonly name = "TermBudgetError";
}

/** One set of interned terms; the terms of an automaton being built, dropped with it. */
export class Terms {
  private readonly interned = new Map<string, Term>();
  private readonly derivatives = new WeakMap<Term, Map<number, Term>>();
  private nextId = 0;
  /**
   * Derivative steps taken. A pattern can keep its automaton small while its terms grow huge
   * (`(.{0,100}){0,100}`), so the work is bounded, not only the states.
   */
  private work = 0;

  constructor(private readonly maxWork = Number.POSITIVE_INFINITY) {}

  /** Matches nothing. */
  readonly none: Term = this.intern("0", { kind: "none", nullable: false });
  /** Matches the empty string only. */
  readonly empty: Term = this.intern("e", { kind: "empty", nullable: true });
  /** Any one character. */
  readonly anyChar: Term = this.chars([0, MAX_CODE_POINT]);
  /** Any string. */
  readonly anything: Term = this.star(this.anyChar);

  /** Counts `steps` of work; throws TermBudgetError past the budget. */
  private spend(steps: number): void {
    this.work += steps;
    if (this.work > this.maxWork) throw new TermBudgetError(`more than ${this.maxWork} steps of work`);
  }

  private intern<T extends Omit<Term, "id">>(key: string, shape: T): Term {
    const known = this.interned.get(key);
    if (known) return known;
    const term = { ...shape, id: this.nextId++ } as unknown as Term;
    this.interned.set(key, term);
    return term;
  }

  chars(ranges: CharRanges): Term {
    if (ranges.length === 0) return this.none;
    return this.intern(`c${ranges.join(",")}`, { kind: "chars", nullable: false, ranges });
  }

  cat(head: Term, tail: Term): Term {
    if (head.kind === "none" || tail.kind === "none") return this.none;
    if (head.kind === "empty") return tail;
    if (tail.kind === "empty") return head;
    if (head.kind === "cat") return this.cat(head.head, this.cat(head.tail, tail));
    return this.intern(`.${head.id},${tail.id}`, {
      kind: "cat",
      nullable: head.nullable && tail.nullable,
      head,
      tail,
    });
  }

  /** A sequence of terms, first to last. */
  seq(...terms: Term[]): Term {
    return terms.reduceRight((tail, head) => this.cat(head, tail), this.empty);
  }

  or(...terms: Term[]): Term {
    const flat = new Map<number, Term>();
    for (const term of terms) {
      for (const part of term.kind === "or" ? term.terms : [term]) {
        if (part === this.anything) return this.anything;
        if (part.kind !== "none") flat.set(part.id, part);
      }
    }
    this.spend(flat.size);
    const list = [...flat.values()].sort((a, b) => a.id - b.id);
    if (list.length === 0) return this.none;
    if (list.length === 1) return list[0]!;
    return this.intern(`|${list.map((t) => t.id).join(",")}`, {
      kind: "or",
      nullable: list.some((t) => t.nullable),
      terms: list,
    });
  }

  and(...terms: Term[]): Term {
    const flat = new Map<number, Term>();
    for (const term of terms) {
      for (const part of term.kind === "and" ? term.terms : [term]) {
        if (part.kind === "none") return this.none;
        if (part !== this.anything) flat.set(part.id, part);
      }
    }
    this.spend(flat.size);
    const list = [...flat.values()].sort((a, b) => a.id - b.id);
    if (list.length === 0) return this.anything;
    if (list.length === 1) return list[0]!;
    return this.intern(`&${list.map((t) => t.id).join(",")}`, {
      kind: "and",
      nullable: list.every((t) => t.nullable),
      terms: list,
    });
  }

  not(term: Term): Term {
    if (term.kind === "not") return term.term;
    if (term.kind === "none") return this.anything;
    if (term === this.anything) return this.none;
    return this.intern(`!${term.id}`, { kind: "not", nullable: !term.nullable, term });
  }

  star(term: Term): Term {
    if (term.kind === "none" || term.kind === "empty") return this.empty;
    if (term.kind === "star") return term;
    return this.intern(`*${term.id}`, { kind: "star", nullable: true, term });
  }

  /** `term` from min to max times (max Infinity: no limit); bounded counts nest optional copies. */
  repeat(term: Term, min: number, max: number): Term {
    let tail = max === Number.POSITIVE_INFINITY ? this.star(term) : this.empty;
    if (max !== Number.POSITIVE_INFINITY) {
      for (let i = min; i < max; i++) tail = this.or(this.empty, this.cat(term, tail));
    }
    for (let i = 0; i < min; i++) tail = this.cat(term, tail);
    return tail;
  }

  /** What may follow character `c` in a string `term` matches. */
  derivative(term: Term, c: number): Term {
    let known = this.derivatives.get(term);
    if (!known) {
      known = new Map();
      this.derivatives.set(term, known);
    }
    let result = known.get(c);
    if (result === undefined) {
      result = this.derive(term, c);
      known.set(c, result);
    }
    return result;
  }

  private derive(term: Term, c: number): Term {
    this.spend(1);
    switch (term.kind) {
      case "none":
      case "empty":
        return this.none;
      case "chars":
        return inRanges(term.ranges, c) ? this.empty : this.none;
      case "cat": {
        const first = this.cat(this.derivative(term.head, c), term.tail);
        return term.head.nullable ? this.or(first, this.derivative(term.tail, c)) : first;
      }
      case "or":
        return this.or(...term.terms.map((t) => this.derivative(t, c)));
      case "and":
        return this.and(...term.terms.map((t) => this.derivative(t, c)));
      case "not":
        return this.not(this.derivative(term.term, c));
      case "star":
        return this.cat(this.derivative(term.term, c), term);
    }
  }
}

export function inRanges(ranges: CharRanges, c: number): boolean {
  let lo = 0;
  let hi = ranges.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (c < ranges[2 * mid]!) hi = mid - 1;
    else if (c > ranges[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

/**
 * The term's character boundaries, ascending: 0 and every point where some character set that its
 * derivative reads starts or stops (a concatenation's tail only where its head can be empty). Characters
 * from one boundary up to the next have the same derivative.
 */
export function boundaries(term: Term): number[] {
  const known = boundariesCache.get(term);
  if (known) return known;
  let points: number[];
  switch (term.kind) {
    case "chars":
      points = [0];
      for (let i = 0; i < term.ranges.length; i += 2) {
        points.push(term.ranges[i]!);
        if (term.ranges[i + 1]! < MAX_CODE_POINT) points.push(term.ranges[i + 1]! + 1);
      }
      break;
    case "cat":
      points = term.head.nullable
        ? merge([boundaries(term.head), boundaries(term.tail)])
        : boundaries(term.head);
      break;
    case "or":
    case "and":
      points = merge(term.terms.map(boundaries));
      break;
    case "not":
    case "star":
      points = boundaries(term.term);
      break;
    default:
      points = [0];
  }
  boundariesCache.set(term, points);
  return points;
}

/** The union of ascending lists, ascending and without repeats. */
function merge(lists: number[][]): number[] {
  if (lists.length === 1) return lists[0]!;
  return [...new Set(lists.flat())].sort((a, b) => a - b);
}
