// Which webhook destinations count as private (gateway/webhook-address.ts): every private, loopback,
// link-local, shared, benchmarking, documentation, multicast, reserved and unspecified range, in IPv4,
// IPv6 and IPv6 forms carrying an IPv4 address (mapped, translated, compatible, NAT64, 6to4) however they
// are written, local-use NAT64 and Teredo, and names of this host; public addresses and names pass.
import { describe, expect, it } from "vitest";
import { privateAddress, privateHost } from "../../gateway/webhook-address.ts";

describe("privateAddress", () => {
  it("refuses every address a webhook must not reach", () => {
    for (const address of [
      "0.0.0.0",
      "10.0.0.1",
      "127.0.0.1",
      "127.255.255.254",
      "100.64.0.1",
      "169.254.169.254",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "224.0.0.1",
      "255.255.255.255",
      "::",
      "::1",
      "[::1]",
      "fc00::1",
      "fd12:3456::1",
      "fe80::1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "::ffff:10.1.2.3",
      // The same as the URL parser writes them, in hex groups.
      "[::ffff:7f00:1]",
      "::ffff:a9fe:a9fe",
      "::ffff:a00:1",
      "0:0:0:0:0:ffff:7f00:1",
      "::127.0.0.1",
      "::7f00:1",
      "64:ff9b::169.254.169.254",
      "64:ff9b::a9fe:a9fe",
      // IPv4-translated, 6to4 of a private address, local-use NAT64 and Teredo.
      "::ffff:0:7f00:1",
      "::ffff:0:10.0.0.1",
      "2002:7f00:1::1",
      "2002:a9fe:a9fe::",
      "2002:c0a8:101::5",
      "64:ff9b:1::a00:1",
      "64:ff9b:1::808:808",
      "2001:0:4136:e378:8000:63bf:3fff:fdd2",
      "fe80::1%eth0",
      "2001:db8::1",
      "100::1",
      "198.18.0.1",
      "198.19.255.255",
      "192.0.0.8",
      "192.0.2.1",
      "198.51.100.7",
      "203.0.113.9",
      "240.0.0.1",
      // Not an address: nothing public to allow.
      "1::2::3",
      "12345::1",
    ]) {
      expect(privateAddress(address), address).toBe(true);
    }
  });

  it("lets public addresses through", () => {
    for (const address of [
      "8.8.8.8",
      "100.63.255.255",
      "100.128.0.1",
      "172.15.0.1",
      "172.32.0.1",
      "192.169.0.1",
      "2606:4700::1111",
      "::ffff:1.1.1.1",
      "::ffff:101:101",
      "64:ff9b::808:808",
      "::ffff:0:808:808",
      "2002:808:808::1",
      "2001:4860:4860::8888",
      "198.17.255.255",
      "198.20.0.1",
      "192.0.1.1",
    ]) {
      expect(privateAddress(address), address).toBe(false);
    }
  });
});

describe("privateHost", () => {
  it("refuses names of this host and private literals, and lets other names through", () => {
    for (const host of ["localhost", "LOCALHOST.", "api.localhost", "127.0.0.1", "[::1]"]) {
      expect(privateHost(host), host).toBe(true);
    }
    // A literal as a webhook URL's hostname reads after the URL parser wrote it.
    for (const url of [
      "http://[::ffff:127.0.0.1]:8080/x",
      "http://[::ffff:169.254.169.254]/",
      "http://[::127.0.0.1]/",
    ]) {
      const host = new URL(url).hostname;
      expect(privateHost(host), host).toBe(true);
    }
    for (const host of ["example.com", "hooks.localhost.example.com", "8.8.8.8"]) {
      expect(privateHost(host), host).toBe(false);
    }
  });
});
