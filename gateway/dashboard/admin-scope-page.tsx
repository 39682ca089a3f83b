// What a dashboard section that only admin keys manage (adapters, webhooks) shows a key without the admin
// scope: a page that says so, rather than an error, so every link in the top bar leads somewhere.
import { ADMIN_SCOPE } from "../api-keys.ts";
import type { Principal } from "../auth.ts";
import { Layout, type Section } from "./layout.tsx";

export function AdminScopePage(props: {
  title: string;
  section: Section;
  principal: Principal;
  notice?: string | undefined;
  error?: string | undefined;
  /** What the section manages, and what an admin key does there. */
  what: string;
  actions: string;
}) {
  return (
    <Layout
      title={props.title}
      section={props.section}
      principal={props.principal}
      notice={props.notice}
      error={props.error}
    >
      <h1>{props.title}</h1>
      <section>
        <p class="muted">
          Managing {props.what} needs an API key with the "{ADMIN_SCOPE}" scope; sign in with one to{" "}
          {props.actions}.
        </p>
      </section>
    </Layout>
  );
}
