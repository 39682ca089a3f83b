// A TCP proxy on a free port in front of one address, which a test can cut (every connection through it
// drops, new ones are refused) and restore: a network partition between one process and a server, with
// the server and everyone else's connections to it untouched.
import { createServer, type Server, Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Drops every connection through the proxy and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export function startTcpProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let isCut = false;
  const server: Server = createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    const upstream = new Socket();
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.once("close", () => open.delete(socket));
      socket.on("error", () => {});
    }
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
    upstream.connect(targetPort, targetHost, () => {
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  const dropAll = () => {
    for (const socket of open) socket.destroy();
  };
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (typeof address !== "object" || !address) return reject(new Error("the proxy has no port"));
      resolve({
        port: address.port,
        cut() {
          isCut = true;
          dropAll();
        },
        restore() {
          isCut = false;
        },
        close: () =>
          new Promise((done) => {
            dropAll();
            server.close(() => done());
          }),
      });
    });
  });
}
