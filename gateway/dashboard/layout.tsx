// The frame every dashboard page shares: head, styles (inline: the page loads nothing else), the top bar
// with the org, the key and the sections, and the notice or error a form action left behind.
import { raw } from "hono/html";
import type { Child } from "hono/jsx";
import type { Principal } from "../auth.ts";

const STYLE = `
:root { --ink:#1f2430; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --card:#fff; --accent:#4f46e5;
  --input:#4f46e5; --output:#0ea5b7; --cost:#16a34a; --danger:#c0362c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans","DejaVu Sans",sans-serif; color:var(--ink); background:var(--bg); }
header { background:#111827; color:#fff; display:flex; align-items:center; gap:24px; padding:0 24px; height:52px; }
header .brand { font-weight:700; letter-spacing:.02em; }
header nav { display:flex; gap:4px; flex:1; }
header nav a { color:#cbd5e1; text-decoration:none; padding:6px 10px; border-radius:6px; }
header nav a.active, header nav a:hover { color:#fff; background:#1f2937; }
header .who { color:#cbd5e1; font-size:13px; display:flex; align-items:center; gap:12px; }
header form { margin:0; }
main { max-width:1100px; margin:0 auto; padding:24px; }
h1 { font-size:20px; margin:0 0 4px; } h2 { font-size:15px; margin:0 0 12px; }
.sub { color:var(--muted); margin:0 0 20px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; margin-bottom:16px; }
.card, section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px; }
section { margin-bottom:16px; overflow-x:auto; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:22px; font-weight:650; margin-top:4px; font-variant-numeric:tabular-nums; }
.card .n { color:var(--muted); font-size:12px; margin-top:2px; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:middle; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; }
.chart { margin:0; } .chart svg { width:100%; height:auto; display:block; }
.chart .tick line { stroke:var(--line); } .chart text { fill:var(--muted); font-size:11px; }
.chart .value { fill:var(--ink); } .chart .hit { fill:transparent; }
.chart .bar:hover .hit { fill:#eef2ff; }
.s-input { fill:var(--input); background:var(--input); } .s-output { fill:var(--output); background:var(--output); }
.s-cost { fill:var(--cost); background:var(--cost); } .s-adapter { fill:var(--accent); }
.legend { display:flex; gap:16px; color:var(--muted); font-size:12px; margin-top:6px; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:-1px; }
.meter { height:10px; background:#eef0f3; border-radius:5px; overflow:hidden; display:flex; margin:8px 0 4px; }
.meter i { display:block; height:100%; } .meter .used { background:var(--input); } .meter .held { background:#a5b4fc; }
.tag { display:inline-block; padding:1px 7px; border-radius:10px; font-size:12px; background:#eef2ff; color:#3730a3; margin:1px 2px; }
.tag.slot { background:#dcfce7; color:#166534; } .tag.ram { background:#e0f2fe; color:#075985; } .tag.disk { background:#f3f4f6; color:#374151; }
td.nowrap { white-space:nowrap; } td.wide { width:60%; }
td.name, .tag { overflow-wrap:anywhere; } td.name { min-width:14ch; }
.tag.completed { background:#dcfce7; color:#166534; } .tag.cancelled, .tag.expired { background:#fee2e2; color:#991b1b; } .tag.cancelling { background:#fef3c7; color:#92400e; }
.muted { color:var(--muted); }
.notice, .error { padding:10px 14px; border-radius:8px; margin-bottom:16px; }
.notice { background:#ecfdf3; border:1px solid #abefc6; } .error { background:#fef3f2; border:1px solid #fecdca; color:#912018; }
.range a, .range strong { margin-left:6px; }
button, input[type=submit] { font:inherit; border:1px solid var(--line); background:#fff; border-radius:6px; padding:4px 10px; cursor:pointer; }
button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
button.danger { color:var(--danger); border-color:#fecdca; }
input[type=number] { width:64px; font:inherit; padding:3px 6px; border:1px solid var(--line); border-radius:6px; }
input[type=password] { font:inherit; width:100%; padding:8px 10px; border:1px solid var(--line); border-radius:6px; }
form.inline { display:inline-flex; gap:6px; align-items:center; margin:0; }
.entry-actions { margin:-8px 0 16px; }
.login { max-width:420px; margin:12vh auto; }
table.turns th { width:120px; }
pre.turn { margin:0; white-space:pre-wrap; word-break:break-word; font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace; }
`;

/** The page itself, without the top bar (the sign-in page). */
export function Document(props: { title: string; children: Child }) {
  return (
    <>
      {raw("<!DOCTYPE html>")}
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>{props.title} · Luminet</title>
          <style>{STYLE}</style>
        </head>
        <body>{props.children}</body>
      </html>
    </>
  );
}

export type Section = "usage" | "fleet" | "adapters" | "batches" | "logs" | "webhooks";

const SECTIONS: Array<[Section, string, string]> = [
  ["usage", "Usage", "/dashboard"],
  ["fleet", "Fleet", "/dashboard/fleet"],
  ["adapters", "Adapters", "/dashboard/adapters"],
  ["batches", "Batches", "/dashboard/batches"],
  ["logs", "Logs", "/dashboard/logs"],
  ["webhooks", "Webhooks", "/dashboard/webhooks"],
];

export function Layout(props: {
  title: string;
  section: Section;
  principal: Principal;
  notice?: string | undefined;
  error?: string | undefined;
  children: Child;
}) {
  return (
    <Document title={props.title}>
      <header>
        <span class="brand">Luminet</span>
        <nav>
          {SECTIONS.map(([section, name, href]) => (
            <a href={href} class={section === props.section ? "active" : ""}>
              {name}
            </a>
          ))}
        </nav>
        <span class="who">
          <span>
            {props.principal.orgId} · {props.principal.prefix}…
          </span>
          <form method="post" action="/dashboard/logout">
            <button type="submit">Sign out</button>
          </form>
        </span>
      </header>
      <main>
        {props.notice ? <div class="notice">{props.notice}</div> : null}
        {props.error ? (
          <div class="error" role="alert">
            {props.error}
          </div>
        ) : null}
        {props.children}
      </main>
    </Document>
  );
}
