// Counts an org's stored responses (their event logs included) and stored chat completions again from
// their rows, for an operator (`luminet orgs recount-storage`). Migration 0026's triggers count every
// write, so this repairs only what went around them or ran them twice: a TRUNCATE, a data-only restore.
// One transaction that first takes the org's 16 counter rows: a write of the org that commits meanwhile
// counts itself at its commit, so it waits for these rows and adds its change on top of the recount,
// while everything committed before is in the recount.
import { sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";

export async function recountResponseStorage(db: Db, org: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(sql`
      insert into response_storage (org_id, shard, bytes)
      select id, shard, 0 from orgs, generate_series(0, 15) as shard where id = ${org}
      on conflict do nothing`);
    await tx.execute(sql`select 1 from response_storage where org_id = ${org} order by shard for update`);
    // Each response's event log from its rows (a restore can have counted one twice), its change counted
    // now rather than at the commit, so the counters set below have the last word.
    await tx.execute(sql`
      update stored_responses as r set event_bytes = logged.bytes
      from (
        select r.id, coalesce((select sum(pg_column_size(e.event)) from response_events as e
          where e.response_id = r.id), 0) as bytes
        from stored_responses as r where r.org_id = ${org}
      ) as logged
      where r.id = logged.id and r.event_bytes <> logged.bytes`);
    await tx.execute(sql`set constraints stored_responses_count_storage immediate`);
    await tx.execute(sql`
      update response_storage set bytes = case when shard = 0 then (
        select coalesce(sum(kept.bytes), 0) from (
          select pg_column_size(r.response) + pg_column_size(r.conversation) + pg_column_size(r.ancestors)
            + r.event_bytes as bytes
          from stored_responses as r where r.org_id = ${org}
          union all
          select pg_column_size(c.completion) + pg_column_size(c.messages) + pg_column_size(c.metadata)
          from stored_chat_completions as c where c.org_id = ${org}
        ) as kept) else 0 end
      where org_id = ${org}`);
  });
}
