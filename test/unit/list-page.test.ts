// Pages of a list held whole (a response's input items, a stored completion's messages): in either order,
// after a cursor, and on to the end even where a list stored before ids were checked unique repeats one.
import { describe, expect, it } from "vitest";
import { pageOf } from "../../gateway/list-page.ts";

const entries = ["a", "b", "c", "d"].map((id) => ({ id }));
const ids = (page: { data: { id: string }[] }) => page.data.map((entry) => entry.id);

describe("pageOf", () => {
  it("pages after the cursor in either order, and says whether more follow", () => {
    expect(ids(pageOf(entries, { limit: 2, order: "asc" }, "item"))).toEqual(["a", "b"]);
    expect(pageOf(entries, { limit: 2, order: "asc", after: "b" }, "item")).toMatchObject({
      data: [{ id: "c" }, { id: "d" }],
      has_more: false,
    });
    expect(ids(pageOf(entries, { limit: 2, order: "desc", after: "c" }, "item"))).toEqual(["b", "a"]);
    expect(() => pageOf(entries, { limit: 2, order: "asc", after: "z" }, "item")).toThrow(
      "No item found with id 'z'.",
    );
  });

  it("reaches the end of a list that repeats an id, following last_id page after page", () => {
    const repeated = ["a", "b", "a", "c"].map((id) => ({ id }));
    for (const order of ["asc", "desc"] as const) {
      const seen: string[] = [];
      let after: string | undefined;
      for (let pages = 0; pages < 10; pages++) {
        const page = pageOf(repeated, { limit: 1, order, after }, "item");
        seen.push(...ids(page));
        if (!page.has_more) break;
        after = page.last_id ?? undefined;
      }
      expect(seen.at(-1)).toBe(order === "asc" ? "c" : "a");
      expect(seen.length).toBeLessThanOrEqual(repeated.length);
    }
  });
});
