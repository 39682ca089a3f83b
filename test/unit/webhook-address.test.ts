// Which webhook destinations count as private (gateway/webhook-address.ts): every private, loopback,
// link-local, shared, multicast and unspecified range, in IPv4, IPv6 and IPv4-mapped IPv6, and names of
// this host; public addresses and names pass.
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
    for (const host of ["example.com", "hooks.localhost.example.com", "8.8.8.8"]) {
      expect(privateHost(host), host).toBe(false);
    }
  });
});
