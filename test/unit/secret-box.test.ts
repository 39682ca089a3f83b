// The at-rest sealing of secrets the gateway reads back (gateway/secret-box.ts): sealed values hide the
// secret and open only under the same key and for the same row; without a key secrets are kept as they
// are, and such values still open once a key is set; previous keys open what they sealed and say it needs
// sealing again; a bad key is refused at startup by name.
import { describe, expect, it } from "vitest";
import { SecretBox, SecretBoxError } from "../../gateway/secret-box.ts";

const key = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
const SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LW9mLWFuLWVuZHBvaW50IQ==";

describe("SecretBox", () => {
  it("seals a secret so that the stored value hides it, and opens it for the same row", async () => {
    const box = new SecretBox(key());
    expect(box.sealing).toBe(true);
    const stored = await box.seal(SECRET, "whep_1");
    expect(stored).toMatch(/^sealed1:/);
    expect(stored).not.toContain(SECRET);
    expect(stored).not.toContain(SECRET.slice(6));
    // A fresh IV each time: the same secret never seals the same way twice.
    expect(await box.seal(SECRET, "whep_1")).not.toBe(stored);
    expect(await box.open(stored, "whep_1")).toBe(SECRET);
  });

  it("does not open a value moved to another row, changed, or sealed under another key", async () => {
    const box = new SecretBox(key());
    const stored = await box.seal(SECRET, "whep_1");
    await expect(box.open(stored, "whep_2")).rejects.toThrow(SecretBoxError);
    const flipped = `${stored.slice(0, -4)}${stored.slice(-4, -3) === "A" ? "B" : "A"}${stored.slice(-3)}`;
    await expect(box.open(flipped, "whep_1")).rejects.toThrow(/does not open/);
    await expect(new SecretBox(key()).open(stored, "whep_1")).rejects.toThrow(/does not open/);
  });

  it("keeps secrets as they are without a key, and opens such values once a key is set", async () => {
    const none = new SecretBox(undefined);
    expect(none.sealing).toBe(false);
    expect(new SecretBox("  ").sealing).toBe(false);
    const kept = await none.seal(SECRET, "whep_1");
    expect(kept).toBe(SECRET);
    expect(await new SecretBox(key()).open(kept, "whep_1")).toBe(SECRET);
    const sealed = await new SecretBox(key()).seal(SECRET, "whep_1");
    await expect(none.open(sealed, "whep_1")).rejects.toThrow(/no LUMINET_SECRETS_KEY/);
  });

  it("opens what a previous key sealed, and says which values want sealing under the current key", async () => {
    const [oldKey, newKey] = [key(), key()];
    const fromOld = await new SecretBox(oldKey).seal(SECRET, "whep_1");
    const rotated = SecretBox.fromEnv({
      LUMINET_SECRETS_KEY: newKey,
      LUMINET_SECRETS_KEY_PREVIOUS: ` ${key()},${oldKey}`,
    });
    expect(await rotated.opened(fromOld, "whep_1")).toEqual({ secret: SECRET, reseal: true });
    const fromNew = await rotated.seal(SECRET, "whep_1");
    expect(await rotated.opened(fromNew, "whep_1")).toEqual({ secret: SECRET, reseal: false });
    expect(await rotated.opened(SECRET, "whep_1")).toEqual({ secret: SECRET, reseal: true });
    expect(await new SecretBox(undefined).opened(SECRET, "whep_1")).toEqual({
      secret: SECRET,
      reseal: false,
    });
    // Once the old key is dropped from the previous ones, what it sealed no longer opens.
    await expect(new SecretBox(newKey).open(fromOld, "whep_1")).rejects.toThrow(/does not open/);
    // A previous key alone still opens (and nothing new is sealed without a current key).
    const previousOnly = new SecretBox(undefined, oldKey);
    expect(await previousOnly.open(fromOld, "whep_1")).toBe(SECRET);
    expect(await previousOnly.seal(SECRET, "whep_1")).toBe(SECRET);
  });

  it("refuses a key that is not 32 bytes of base64, naming the variable", () => {
    for (const bad of ["short", Buffer.alloc(16).toString("base64"), "not base64 at all!!"]) {
      expect(() => new SecretBox(bad)).toThrow(/LUMINET_SECRETS_KEY must be 32 bytes in base64/);
      expect(() => new SecretBox(key(), `${key()},${bad}`)).toThrow(
        /each key of LUMINET_SECRETS_KEY_PREVIOUS must be 32 bytes in base64/,
      );
    }
  });
});
