// Secrets the gateway must read back, not only check (a webhook endpoint's signing secret: deliveries are
// signed with it), sealed at rest with AES-256-GCM under the operator's key, LUMINET_SECRETS_KEY (32 bytes
// in base64), so that a copy of the database alone does not give them away. Each sealed value is bound to
// its row (the row's id is the cipher's additional data): copied into another row it does not open.
// Without a key, secrets are kept as they are; values kept so before a key was set still open after it is
// (sealed ones start with SEALED), so setting the key needs no migration. Rotation: the old keys go in
// LUMINET_SECRETS_KEY_PREVIOUS (comma-separated), which open what they sealed, until `luminet webhooks
// seal-secrets` has sealed it again under the new key. Web Crypto: Node and Workers alike.

const SEALED = "sealed1:";
const KEY_BYTES = 32;
const IV_BYTES = 12;

export class SecretBoxError extends Error {}

/** Web Crypto's key object (no DOM lib here: the type as importKey gives it). */
type AesKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** A 32-byte key from its base64 (`variable` names it in the error), imported on first use. */
class SealingKey {
  #key: Promise<AesKey> | null = null;
  readonly #raw: Uint8Array;

  constructor(base64: string, variable: string) {
    let raw: Uint8Array;
    try {
      raw = fromBase64(base64.trim());
    } catch {
      raw = new Uint8Array(0);
    }
    if (raw.length !== KEY_BYTES) {
      throw new SecretBoxError(
        `${variable} must be ${KEY_BYTES} bytes in base64 (e.g. the output of \`openssl rand -base64 32\`)`,
      );
    }
    this.#raw = raw;
  }

  get(): Promise<AesKey> {
    this.#key ??= crypto.subtle.importKey("raw", this.#raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    return this.#key;
  }
}

/** The process's keys as its environment gives them. */
export interface SecretKeysEnv {
  LUMINET_SECRETS_KEY?: string | undefined;
  LUMINET_SECRETS_KEY_PREVIOUS?: string | undefined;
}

export class SecretBox {
  readonly #current: SealingKey | null;
  readonly #previous: SealingKey[];

  /**
   * `keyBase64`: LUMINET_SECRETS_KEY as the operator set it (`openssl rand -base64 32`); undefined or empty:
   * no key, secrets kept as they are. `previousBase64`: LUMINET_SECRETS_KEY_PREVIOUS, earlier keys,
   * comma-separated. A key that is not 32 bytes of base64 throws here, at startup.
   */
  constructor(keyBase64: string | undefined, previousBase64?: string) {
    this.#current = keyBase64?.trim() ? new SealingKey(keyBase64, "LUMINET_SECRETS_KEY") : null;
    this.#previous = (previousBase64 ?? "")
      .split(",")
      .filter((key) => key.trim() !== "")
      .map((key) => new SealingKey(key, "each key of LUMINET_SECRETS_KEY_PREVIOUS"));
  }

  /** The box the environment's keys make. */
  static fromEnv(env: SecretKeysEnv): SecretBox {
    return new SecretBox(env.LUMINET_SECRETS_KEY, env.LUMINET_SECRETS_KEY_PREVIOUS);
  }

  /** Whether a stored value is a sealed secret (else a secret kept as it is). */
  static isSealed(stored: string): boolean {
    return stored.startsWith(SEALED);
  }

  /** Whether secrets are sealed (a key is set). */
  get sealing(): boolean {
    return this.#current !== null;
  }

  /** What to store for `secret`, the secret of row `rowId`. */
  async seal(secret: string, rowId: string): Promise<string> {
    if (this.#current === null) return secret;
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(rowId) },
      await this.#current.get(),
      new TextEncoder().encode(secret),
    );
    return `${SEALED}${toBase64(iv)}:${toBase64(new Uint8Array(sealed))}`;
  }

  /** The secret that `stored` (what seal gave for row `rowId`, or a secret kept as it was) holds. */
  async open(stored: string, rowId: string): Promise<string> {
    return (await this.opened(stored, rowId)).secret;
  }

  /**
   * The secret `stored` holds, and whether it needs sealing (again) under the current key: kept unsealed,
   * or sealed under a previous key.
   */
  async opened(stored: string, rowId: string): Promise<{ secret: string; reseal: boolean }> {
    if (!SecretBox.isSealed(stored)) return { secret: stored, reseal: this.sealing };
    const keys = [...(this.#current ? [this.#current] : []), ...this.#previous];
    if (keys.length === 0) {
      throw new SecretBoxError(
        "the secret is sealed, and this process has no LUMINET_SECRETS_KEY to open it",
      );
    }
    const [iv, sealed] = stored.slice(SEALED.length).split(":");
    for (const key of keys) {
      try {
        const opened = await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: fromBase64(iv!), additionalData: new TextEncoder().encode(rowId) },
          await key.get(),
          fromBase64(sealed!),
        );
        return { secret: new TextDecoder().decode(opened), reseal: key !== this.#current };
      } catch {
        // Not this key's: try the next.
      }
    }
    throw new SecretBoxError(
      "the secret does not open with this LUMINET_SECRETS_KEY or LUMINET_SECRETS_KEY_PREVIOUS (another key sealed it, or the row was changed)",
    );
  }
}
