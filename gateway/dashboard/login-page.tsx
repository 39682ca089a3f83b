// The dashboard's sign-in page: one form that posts an API key. The key is checked like a bearer key and
// then forgotten; the session cookie carries only the key's id.
import { Document } from "./layout.tsx";

export function LoginPage(props: { error?: string | undefined; notice?: string | undefined }) {
  return (
    <Document title="Sign in">
      <main class="login">
        <section>
          <h1>Luminet dashboard</h1>
          <p class="sub">Sign in with one of your org's API keys (lk_…).</p>
          {props.notice ? (
            <div class="notice" role="status">
              {props.notice}
            </div>
          ) : null}
          {props.error ? (
            <div class="error" role="alert">
              {props.error}
            </div>
          ) : null}
          <form method="post" action="/dashboard/login">
            <p>
              <label for="api_key">API key</label>
              <input
                id="api_key"
                type="password"
                name="api_key"
                autocomplete="off"
                required
                placeholder="lk_…"
              />
            </p>
            <button type="submit" class="primary">
              Sign in
            </button>
          </form>
        </section>
      </main>
    </Document>
  );
}
