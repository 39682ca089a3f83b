// `luminet webhooks seal-secrets` on DATABASE_URL: endpoints created before LUMINET_SECRETS_KEY was set have
// their signing secrets sealed under it (each opens to the secret it was, for its own endpoint), sealed ones
// are left alone, a second run seals nothing; after a rotation it seals again under the new key what the
// previous one sealed; without a key, or with a secret no key opens, it refuses and changes nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerWebhooks } from "../../cli/commands/webhooks.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { ensureOrg } from "../../gateway/api-keys.ts";
import { SecretBox } from "../../gateway/secret-box.ts";
import { createWebhook } from "../../gateway/webhooks.ts";
import { webhookEndpoints } from "../../schema/db.ts";
import { luminetInProcess } from "../support/luminet-command.ts";
import { ownDatabase } from "../support/own-database.ts";

let url: string;
let drop: () => Promise<void>;
const KEY = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");

function luminet(env: Record<string, string | undefined>) {
  return luminetInProcess(registerWebhooks, ["webhooks", "seal-secrets"], {
    DATABASE_URL: url,
    LOG_LEVEL: "silent",
    ...env,
  });
}

async function withDb<T>(run: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb(url);
  try {
    return await run(db);
  } finally {
    await db.close();
  }
}

/** Endpoint ids unique over the file. */
let created = 0;

const storedSecrets = () =>
  withDb(
    async (db) => new Map((await db.select().from(webhookEndpoints)).map((row) => [row.id, row.secret])),
  );

/** Endpoints created as a gateway with `secrets` would; their ids and secrets. */
function create(secrets: SecretBox, count: number): Promise<Map<string, string>> {
  return withDb(async (db) => {
    const deps = {
      db,
      secrets,
      allowPrivateWebhooks: false,
      now: Date.now,
      newRequestId: () => `endpoint${created++}`,
    };
    const made = new Map<string, string>();
    for (let i = 0; i < count; i++) {
      const endpoint = await createWebhook(deps, "acme", { url: `https://hooks.example.com/${i}` });
      made.set(endpoint.id, endpoint.secret);
    }
    return made;
  });
}

beforeAll(async () => {
  ({ url, drop } = await ownDatabase("webhooks_seal_cli"));
  await withDb(async (db) => {
    await migrate(db);
    await ensureOrg(db, "acme");
  });
});

afterAll(() => drop());

describe("luminet webhooks seal-secrets", () => {
  it("seals the secrets kept unsealed, leaves sealed ones, and seals nothing the second time", async () => {
    const box = new SecretBox(KEY);
    const plain = await create(new SecretBox(undefined), 3);
    const alreadySealed = await create(box, 1);
    const before = await storedSecrets();

    const run = await luminet({ LUMINET_SECRETS_KEY: KEY });
    expect([run.code, run.stdout]).toEqual([0, "sealed 3, sealed again under the current key 0\n"]);
    const after = await storedSecrets();
    for (const [id, secret] of [...plain, ...alreadySealed]) {
      expect(SecretBox.isSealed(after.get(id)!)).toBe(true);
      expect(await box.open(after.get(id)!, id)).toBe(secret);
    }
    const [sealedId] = [...alreadySealed.keys()];
    expect(after.get(sealedId!)).toBe(before.get(sealedId!));

    const again = await luminet({ LUMINET_SECRETS_KEY: KEY });
    expect(again.stdout).toBe("sealed 0, sealed again under the current key 0\n");
    expect(await storedSecrets()).toEqual(after);

    // Rotation: a new key, the old one among the previous.
    const newKey = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
    const rotated = await luminet({ LUMINET_SECRETS_KEY: newKey, LUMINET_SECRETS_KEY_PREVIOUS: KEY });
    expect(rotated.stdout).toBe("sealed 0, sealed again under the current key 4\n");
    const current = new SecretBox(newKey);
    const now = await storedSecrets();
    for (const [id, secret] of [...plain, ...alreadySealed])
      expect(await current.open(now.get(id)!, id)).toBe(secret);
  });

  it("refuses without a key, or with a bad one, and changes nothing", async () => {
    await create(new SecretBox(undefined), 1);
    const before = await storedSecrets();
    for (const key of [undefined, "short"]) {
      const run = await luminet({ LUMINET_SECRETS_KEY: key });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/LUMINET_SECRETS_KEY/);
    }
    // The first test's secrets are sealed under a key this run is not given.
    const stranger = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
    const lost = await luminet({ LUMINET_SECRETS_KEY: stranger });
    expect(lost.code).toBe(1);
    expect(lost.stderr).toMatch(/endpoint whep_endpoint\d+: the secret does not open/);
    expect(await storedSecrets()).toEqual(before);
  });
});
