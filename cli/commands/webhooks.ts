// `luminet webhooks ...`: an org's webhook endpoints through the gateway's admin API (/v1/webhooks), with an
// admin key of the org. `create` prints the endpoint's signing secret alone on stdout (so
// `SECRET=$(luminet webhooks create --url …)` works): it is shown once and never again. Tables for people,
// the API's JSON with --json. `seal-secrets` is the operator's, on DATABASE_URL: it seals the secrets kept
// unsealed from before LUMINET_SECRETS_KEY was set, and those sealed under a previous key once it changed
// (gateway/secret-box.ts).
import type { Command } from "commander";
import { SecretBox } from "../../gateway/secret-box.ts";
import { sealWebhookSecrets } from "../../gateway/webhooks.ts";
import type { CreatedWebhook, WebhookDeleted, WebhookList, WebhookObject } from "../../schema/webhook-api.ts";
import { callGateway, type GatewayFlags, gatewayOptions, jsonBody } from "../gateway-client.ts";
import { runCommand } from "../run-command.ts";
import { instantCell, table } from "../table.ts";
import { withDb } from "../with-db.ts";

interface WebhookFlags extends GatewayFlags {
  json?: boolean;
}

const run = (command: string, action: () => Promise<void>) => runCommand(`webhooks ${command}`, action);

function rows(list: readonly WebhookObject[]): string {
  return `${table(
    ["ID", "URL", "EVENTS", "CREATED"],
    list.map((w) => [w.id, w.url, w.events?.join(",") ?? "all", instantCell(w.created_at)]),
  )}\n`;
}

export function registerWebhooks(program: Command): void {
  const webhooks = program
    .command("webhooks")
    .description("where the org hears that its batches and background responses ended, through the gateway");
  const withConnection = (command: Command) =>
    gatewayOptions(command, "an admin key of the org").option("--json", "print the API's JSON");

  withConnection(
    webhooks
      .command("create")
      .description("register an endpoint; prints its signing secret (whsec_…), shown only now")
      .requiredOption("--url <url>", "where events are POSTed: a public http(s) URL")
      .option(
        "--events <types>",
        "comma-separated event types (batch.completed, response.completed, …); default all",
      ),
  ).action((flags: WebhookFlags & { url: string; events?: string }) =>
    run("create", async () => {
      const events = flags.events?.split(",").map((type) => type.trim());
      const created = (await callGateway(
        flags,
        "POST",
        "/v1/webhooks",
        jsonBody({ url: flags.url, ...(events ? { events } : {}) }),
      )) as CreatedWebhook;
      process.stdout.write(flags.json ? `${JSON.stringify(created)}\n` : `${created.secret}\n`);
      if (!flags.json)
        process.stderr.write(`created ${created.id}; keep the secret: it is not shown again\n`);
    }),
  );

  withConnection(webhooks.command("list").description("the org's endpoints, oldest first")).action(
    (flags: WebhookFlags) =>
      run("list", async () => {
        const list = (await callGateway(flags, "GET", "/v1/webhooks")) as WebhookList;
        process.stdout.write(flags.json ? `${JSON.stringify(list)}\n` : rows(list.data));
      }),
  );

  withConnection(
    webhooks.command("delete <id>").description("delete an endpoint and what it was not sent"),
  ).action((id: string, flags: WebhookFlags) =>
    run("delete", async () => {
      const deleted = (await callGateway(
        flags,
        "DELETE",
        `/v1/webhooks/${encodeURIComponent(id)}`,
      )) as WebhookDeleted;
      process.stdout.write(flags.json ? `${JSON.stringify(deleted)}\n` : `deleted ${deleted.id}\n`);
    }),
  );

  webhooks
    .command("seal-secrets")
    .description(
      "seal under LUMINET_SECRETS_KEY the signing secrets kept unsealed or sealed under a key of LUMINET_SECRETS_KEY_PREVIOUS (DATABASE_URL)",
    )
    .action(() =>
      withDb("webhooks seal-secrets", async (db) => {
        const { sealed, resealed } = await sealWebhookSecrets(db, SecretBox.fromEnv(process.env));
        process.stdout.write(`sealed ${sealed}, sealed again under the current key ${resealed}\n`);
      }),
    );
}
