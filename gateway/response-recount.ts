// Counts an org's stored responses (their event logs included, as event_bytes holds them) and stored chat
// completions again from their rows, for an operator (`luminet orgs recount-storage`). Migration 0026's
// triggers count every write, so this repairs only what went around them: rows restored with triggers
// disabled, a TRUNCATE. One transaction that first takes the org's 16 shard rows: a write of the org that
// commits meanwhile counts itself at its commit, so it waits for these rows and adds its change on top of
// the recount, while everything committed before is in the recount.
import { sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";

export async function recountResponseStorage(db: Db, org: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(sql`
      insert into response_storage (org_id, shard, bytes)
      select id, shard, 0 from orgs, generate_series(0, 15) as shard where id = ${org}
      on conflict do nothing`);
    await tx.execute(sql`select 1 from response_storage where org_id = ${org} for update`);
    await tx.execute(sql`
      update response_storage as s set bytes = coalesce(
        (select sum(kept.bytes) from (
          select hashtext(r.id) & 15 as shard,
            pg_column_size(r.response) + pg_column_size(r.conversation) + pg_column_size(r.ancestors)
              + r.event_bytes as bytes
          from stored_responses as r where r.org_id = ${org}
          union all
          select hashtext(c.id) & 15,
            pg_column_size(c.completion) + pg_column_size(c.messages) + pg_column_size(c.metadata)
          from stored_chat_completions as c where c.org_id = ${org}
        ) as kept where kept.shard = s.shard), 0)
      where s.org_id = ${org}`);
  });
}
