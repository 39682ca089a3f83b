// Secrets the gateway must read back, not only check (a webhook endpoint's signing secret: deliveries are
// signed with it), sealed at rest with AES-256-GCM under the operator's key, LUMINET_SECRETS_KEY (32 bytes
// in base64), so that a copy of the database alone does not give them away. Each sealed value is bound to
// its row (the row's id is the cipher's additional data): copied into another row it does not open.
// Without a key, secrets are kept as they are; values kept so before a key was set still open after it is
// (sealed ones start with SEALED), so setting the key needs no migration. Web Crypto: Node and Workers alike.

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

export class SecretBox {
  readonly #raw: Uint8Array | null;
  #key: Promise<AesKey> | null = null;

  /**
   * `keyBase64`: LUMINET_SECRETS_KEY as the operator set it (`openssl rand -base64 32`); undefined or empty:
   * no key, secrets kept as they are. A key that is not 32 bytes of base64 throws here, at startup.
   */
  constructor(keyBase64: string | undefined) {
    if (keyBase64 === undefined || keyBase64.trim() === "") {
      this.#raw = null;
      return;
    }
    let raw: Uint8Array;
    try {
      raw = fromBase64(keyBase64.trim());
    } catch {
      raw = new Uint8Array(0);
    }
    if (raw.length !== KEY_BYTES) {
      throw new SecretBoxError(
        `LUMINET_SECRETS_KEY must be ${KEY_BYTES} bytes in base64 (e.g. the output of \`openssl rand -base64 32\`)`,
      );
    }
    this.#raw = raw;
  }

  /** Whether a stored value is a sealed secret (else a secret kept as it is). */
  static isSealed(stored: string): boolean {
    return stored.startsWith(SEALED);
  }

  /** Whether secrets are sealed (a key is set). */
  get sealing(): boolean {
    return this.#raw !== null;
  }

  /** What to store for `secret`, the secret of row `rowId`. */
  async seal(secret: string, rowId: string): Promise<string> {
    if (this.#raw === null) return secret;
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(rowId) },
      await this.#cryptoKey(),
      new TextEncoder().encode(secret),
    );
    return `${SEALED}${toBase64(iv)}:${toBase64(new Uint8Array(sealed))}`;
  }

  /** The secret that `stored` (what seal gave for row `rowId`, or a secret kept as it was) holds. */
  async open(stored: string, rowId: string): Promise<string> {
    if (!SecretBox.isSealed(stored)) return stored;
    if (this.#raw === null) {
      throw new SecretBoxError(
        "the secret is sealed, and this process has no LUMINET_SECRETS_KEY to open it",
      );
    }
    const [iv, sealed] = stored.slice(SEALED.length).split(":");
    try {
      const opened = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: fromBase64(iv!), additionalData: new TextEncoder().encode(rowId) },
        await this.#cryptoKey(),
        fromBase64(sealed!),
      );
      return new TextDecoder().decode(opened);
    } catch {
      throw new SecretBoxError(
        "the secret does not open with this LUMINET_SECRETS_KEY (another key sealed it, or the row was changed)",
      );
    }
  }

  #cryptoKey(): Promise<AesKey> {
    this.#key ??= crypto.subtle.importKey("raw", this.#raw!, "AES-GCM", false, ["encrypt", "decrypt"]);
    return this.#key;
  }
}
