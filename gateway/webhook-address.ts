// Which webhook destinations are private: loopback, private, shared, link-local (cloud metadata services
// live there), benchmarking, documentation, reserved and unspecified addresses, IPv6 forms that carry an
// IPv4 address (mapped, translated, compatible, NAT64, 6to4) judged by that address, local-use NAT64 and
// Teredo (tunnels into IPv4 this network's relays would take), and names for this host. An org's
// webhook must not make the gateway call into its own network (server-side request forgery), so such URLs
// are refused when an endpoint is created and such addresses when a delivery resolves its host, unless the
// operator allows them (a development stack, or webhooks into the operator's own network).
//
// IPv6 text is parsed into its 16-bit groups rather than matched as text: the URL parser writes
// `[::ffff:127.0.0.1]` as `[::ffff:7f00:1]`, which a textual match of the dotted form let through.

/** Whether the IPv4 address a.b.c.* lies in a block that is not the public internet. */
function privateV4(a: number, b: number, c: number): boolean {
  return (
    a === 0 || // "this network"
    a === 10 ||
    a === 127 ||
    (a === 100 && b >= 64 && b <= 127) || // shared address space (carrier NAT)
    (a === 169 && b === 254) || // link-local: cloud metadata
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 0 && (c === 0 || c === 2)) || // IETF protocol assignments, TEST-NET-1
    (a === 192 && b === 168) ||
    (a === 198 && (b === 18 || b === 19)) || // benchmarking
    (a === 198 && b === 51 && c === 100) || // TEST-NET-2
    (a === 203 && b === 0 && c === 113) || // TEST-NET-3
    a >= 224 // multicast, reserved, broadcast
  );
}

function parseV4(text: string): [number, number, number, number] | null {
  const parts = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!parts) return null;
  const octets = parts.slice(1).map(Number) as [number, number, number, number];
  return octets.every((n) => n <= 255) ? octets : null;
}

/** The eight 16-bit groups of an IPv6 address, or null when the text is not one. */
function parseV6(text: string): number[] | null {
  let rest = text.replace(/%.*$/, ""); // a zone index (fe80::1%eth0) names no other address
  const tail: number[] = [];
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(rest);
  if (dotted) {
    const v4 = parseV4(dotted[2]!);
    if (!v4) return null;
    tail.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    rest = dotted[1]!.endsWith("::") ? dotted[1]! : dotted[1]!.slice(0, -1);
  }
  const halves = rest.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string) => (half === "" ? [] : half.split(":"));
  const head = groups(halves[0]!);
  const after = halves.length === 2 ? groups(halves[1]!) : [];
  if ([...head, ...after].some((g) => !/^[0-9a-f]{1,4}$/.test(g))) return null;
  const known = head.length + after.length + tail.length;
  if (halves.length === 1 ? known !== 8 : known > 7) return null;
  const zeros = Array<number>(8 - known).fill(0);
  return [
    ...head.map((g) => Number.parseInt(g, 16)),
    ...zeros,
    ...after.map((g) => Number.parseInt(g, 16)),
    ...tail,
  ];
}

/** True for an IPv4 or IPv6 address (as text) that is not on the public internet. */
export function privateAddress(address: string): boolean {
  const ip = address.replace(/^\[|\]$/g, "").toLowerCase();
  const v4 = parseV4(ip);
  if (v4) return privateV4(v4[0], v4[1], v4[2]);
  if (!ip.includes(":")) return false;
  const g = parseV6(ip);
  // Not an address at all: nothing public to reach, so nothing to allow.
  if (!g) return true;
  const embedded = () => privateV4(g[6]! >> 8, g[6]! & 0xff, g[7]! >> 8);
  const zerosUpTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zerosUpTo(5) && g[5] === 0xffff) return embedded(); // IPv4-mapped ::ffff:a.b.c.d
  if (zerosUpTo(4) && g[4] === 0xffff && g[5] === 0) return embedded(); // IPv4-translated ::ffff:0:a.b.c.d
  if (zerosUpTo(6)) return true; // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) {
    return embedded(); // NAT64 64:ff9b::a.b.c.d
  }
  const first = g[0]!;
  // 6to4 2002:AABB:CCDD::/48 carries the IPv4 address AA.BB.CC.DD: a relay would take it there.
  if (first === 0x2002) return privateV4(g[1]! >> 8, g[1]! & 0xff, g[2]! >> 8);
  return (
    (first === 0x64 && g[1] === 0xff9b && g[2] === 1) || // local-use NAT64 64:ff9b:1::/48: this network's translator
    (first === 0x2001 && g[1] === 0) || // Teredo 2001::/32: a tunnel to an IPv4 address it obscures
    (first & 0xfe00) === 0xfc00 || // unique local fc00::/7
    (first & 0xffc0) === 0xfe80 || // link-local fe80::/10
    (first & 0xff00) === 0xff00 || // multicast
    (first === 0x2001 && g[1] === 0x0db8) || // documentation
    (first === 0x0100 && g[1] === 0 && g[2] === 0 && g[3] === 0) // discard-only 100::/64
  );
}

/** True for a URL host that names this host or a private address literally. */
export function privateHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  return host === "localhost" || host.endsWith(".localhost") || privateAddress(host);
}
