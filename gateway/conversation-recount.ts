// Counts an org's conversations again from their rows, for an operator (`luminet orgs recount-storage`):
// items not yet counted (added by a gateway from before migration 0024 during a rolling upgrade) from
// their stored JSON, each conversation's bytes and next position, and the org's shards from its
// conversations (dropping what conversations deleted by such a gateway left). Runs in one transaction
// holding the org's conversations and its storage turn, so writes to them wait for it; as migration 0024
// does, it counts uncounted JSON as Postgres prints it, a few percent more than a gateway counts it.
import { eq, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { conversationStorage, conversations } from "../schema/db.ts";

export async function recountConversationStorage(db: Db, org: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx
      .select({ id: conversations.id })
      .from(conversations)
      .where(eq(conversations.orgId, org))
      .for("update");
    // After the conversations' rows, as a checked write takes them (its conversation's, then this).
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-conversation-storage:${org}`}))`);
    await tx.execute(sql`
      update conversation_items as i set bytes = octet_length(i.item::text)
      from conversations as c
      where c.id = i.conversation_id and c.org_id = ${org} and i.bytes = 0`);
    await tx.execute(sql`
      update conversations as c set
        bytes = octet_length(c.metadata::text)
          + coalesce((select sum(i.bytes) from conversation_items as i where i.conversation_id = c.id), 0),
        next_position = greatest(c.next_position,
          coalesce((select max(i.position) + 1 from conversation_items as i where i.conversation_id = c.id), 0))
      where c.org_id = ${org}`);
    await tx.delete(conversationStorage).where(eq(conversationStorage.orgId, org));
    await tx.execute(sql`
      insert into conversation_storage (org_id, shard, bytes)
      select org_id, hashtext(id) & 15, sum(bytes) from conversations where org_id = ${org} group by 1, 2`);
  });
}
