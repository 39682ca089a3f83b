// What a stored response's or stored chat completion's row counts against its org's response storage, as
// the tests recount it from the rows themselves: its JSON columns (and a response's chain of ids) as
// Postgres stores them, and a response's event log as response_events stores it: the measure migration
// 0026's triggers count.
import { sql } from "drizzle-orm";
import { storedChatCompletions, storedResponses } from "../../schema/db.ts";

/** Select from stored_responses. */
export const storedResponseBytes = sql<number>`pg_column_size(${storedResponses.response})
  + pg_column_size(${storedResponses.conversation}) + pg_column_size(${storedResponses.ancestors})
  + (select coalesce(sum(pg_column_size(e.event)), 0) from response_events as e
     where e.response_id = "stored_responses"."id")`.mapWith(Number);

/** Select from stored_chat_completions. */
export const storedChatCompletionBytes = sql<number>`pg_column_size(${storedChatCompletions.completion})
  + pg_column_size(${storedChatCompletions.messages}) + pg_column_size(${storedChatCompletions.metadata})`.mapWith(
  Number,
);
