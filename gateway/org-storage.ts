// What an org stores against its storage limits, as GET /v1/storage answers and the dashboard shows it:
// what each kind holds (gateway/orgs.ts) with its limit, the org's own where the operator set one, else
// this gateway's --max-org-*-storage.
import type { Db } from "../db/open.ts";
import type { StorageObject } from "../schema/storage-api.ts";
import type { GatewayDeps } from "./deps.ts";
import { getOrg } from "./orgs.ts";

export async function orgStorage(
  deps: Pick<GatewayDeps, "limits"> & { db: Db },
  orgId: string,
): Promise<StorageObject> {
  const org = await getOrg(deps.db, orgId);
  const use = (held: { bytes: number; limit: number | null } | undefined, gatewayLimit: number) => ({
    bytes: held?.bytes ?? 0,
    limit: held?.limit ?? gatewayLimit,
  });
  return {
    object: "storage",
    org: orgId,
    files: use(org?.storage.files, deps.limits.maxOrgFileBytes),
    adapters: use(org?.storage.adapters, deps.limits.maxOrgAdapterBytes),
    conversations: use(org?.storage.conversations, deps.limits.maxOrgConversationBytes),
    responses: use(org?.storage.responses, deps.limits.maxOrgResponseBytes),
  };
}
