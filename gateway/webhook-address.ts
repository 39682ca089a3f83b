// Which webhook destinations are private: loopback, private, link-local (cloud metadata services live
// there) and unspecified addresses, and names for this host. An org's webhook must not make the gateway
// call into its own network (server-side request forgery), so such URLs are refused when an endpoint is
// created and such addresses when a delivery resolves its host, unless the operator allows them (a
// development stack, or webhooks into the operator's own network).

/** True for an IPv4 or IPv6 address (as text) that is not on the public internet. */
export function privateAddress(address: string): boolean {
  const ip = address.replace(/^\[|\]$/g, "").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  if (mapped) return privateAddress(mapped[1]!);
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      a >= 224
    );
  }
  if (!ip.includes(":")) return false;
  return (
    ip === "::" ||
    ip === "::1" ||
    ip.startsWith("fc") ||
    ip.startsWith("fd") ||
    /^fe[89ab]/.test(ip) ||
    ip.startsWith("ff")
  );
}

/** True for a URL host that names this host or a private address literally. */
export function privateHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  return host === "localhost" || host.endsWith(".localhost") || privateAddress(host);
}
