// What the org keeps with Luminet against its storage limits, on the usage page: its files not yet
// expired, its adapters, its conversations and its stored responses and chat completions, each with the
// most it may hold (the org's own limit where the operator set one, else the gateway's). A write past a
// limit is refused with a 400 naming it.
import { humanBytes } from "../../core/human-bytes.ts";
import type { StorageKind } from "../org-storage-limit.ts";

export interface StorageHeld {
  kind: StorageKind;
  bytes: number;
  limit: number;
}

const LABELS: Record<StorageKind, string> = {
  files: "Files",
  adapters: "Adapters",
  conversations: "Conversations",
  responses: "Stored responses and completions",
};

export function StorageCard({ storage }: { storage: readonly StorageHeld[] }) {
  return (
    <section id="storage">
      <h2>Storage</h2>
      <table>
        <tbody>
          {storage.map(({ kind, bytes, limit }) => (
            <tr data-storage={kind} data-bytes={bytes} data-limit={limit}>
              <th>{LABELS[kind]}</th>
              <td class="wide">
                <div class="meter" title={`${bytes} of ${limit} bytes`}>
                  <i
                    class="used"
                    style={`width:${Math.min(100, (bytes / Math.max(1, limit)) * 100).toFixed(2)}%`}
                  />
                </div>
              </td>
              <td class="num">
                {humanBytes(bytes)} of {humanBytes(limit)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
