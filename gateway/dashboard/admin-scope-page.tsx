// What a dashboard section that only admin keys manage (adapters, webhooks) shows a key without the admin
// scope: a page that says so, rather than an error, so every link in the top bar leads somewhere.
import { ADMIN_SCOPE } from "../api-keys.ts";

export function AdminScopePage(props: { title: string; what: string; actions: string }) {
  return (
    <>
      <h1>{props.title}</h1>
      <section>
        <p class="muted">
          Managing {props.what} needs an API key with the "{ADMIN_SCOPE}" scope; sign in with one to{" "}
          {props.actions}.
        </p>
      </section>
    </>
  );
}
