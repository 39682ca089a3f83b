// A WebSocket-to-TCP proxy for Neon's serverless driver in tests: the driver opens
// ws://HOST:PORT/v1?address=<pg host>:<pg port> (neonConfig.wsProxy) and speaks the Postgres protocol in
// binary frames, which this proxy copies to and from a TCP connection to that address — what Neon's own
// wsproxy does, so a plain local Postgres serves a Worker. Node's http upgrade and net only: RFC 6455
// framing for one binary stream, no extensions, no TLS.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";

const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export interface PostgresWsProxy {
  /** What NEON_WS_PROXY / neonConfig.wsProxy takes: "127.0.0.1:<port>/v1". */
  readonly address: string;
  close(): Promise<void>;
}

function frame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const header =
    length < 126
      ? Buffer.from([0x80 | opcode, length])
      : length < 65536
        ? Buffer.from([0x80 | opcode, 126, length >> 8, length & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLength(length)]);
  return Buffer.concat([header, payload]);
}

function bigLength(length: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(length));
  return bytes;
}

/** Reads client frames (always masked) from a byte stream; calls back with each whole frame. */
class FrameReader {
  #buffered = Buffer.alloc(0);

  constructor(private readonly onFrame: (opcode: number, payload: Buffer) => void) {}

  push(data: Buffer): void {
    this.#buffered = Buffer.concat([this.#buffered, data]);
    for (;;) {
      const b = this.#buffered;
      if (b.length < 2) return;
      const opcode = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let length = b[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      const maskOffset = offset;
      if (masked) offset += 4;
      if (b.length < offset + length) return;
      const payload = Buffer.from(b.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= b[maskOffset + (i % 4)]!;
      this.#buffered = b.subarray(offset + length);
      this.onFrame(opcode, payload);
    }
  }
}

function bridge(request: IncomingMessage, client: Socket, head: Buffer): void {
  const address = new URL(request.url ?? "/", "http://proxy").searchParams.get("address");
  const key = request.headers["sec-websocket-key"];
  const at = address?.lastIndexOf(":") ?? -1;
  if (!address || at <= 0 || typeof key !== "string") {
    client.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    return;
  }
  const accept = createHash("sha1")
    .update(key + WEBSOCKET_GUID)
    .digest("base64");
  client.write(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  client.setNoDelay(true);
  const upstream = connect(Number(address.slice(at + 1)), address.slice(0, at));
  upstream.setNoDelay(true);
  const reader = new FrameReader((opcode, payload) => {
    if (opcode === OPCODE.binary || opcode === OPCODE.text || opcode === OPCODE.continuation) {
      upstream.write(payload);
    } else if (opcode === OPCODE.ping) client.write(frame(OPCODE.pong, payload));
    else if (opcode === OPCODE.close) {
      client.end(frame(OPCODE.close, Buffer.alloc(0)));
      upstream.end();
    }
  });
  upstream.on("data", (data: Buffer) => client.write(frame(OPCODE.binary, data)));
  upstream.on("close", () => client.end());
  upstream.on("error", () => client.destroy());
  client.on("data", (data: Buffer) => reader.push(data));
  client.on("close", () => upstream.destroy());
  client.on("error", () => upstream.destroy());
  if (head.length > 0) reader.push(head);
}

export function startPostgresWsProxy(): Promise<PostgresWsProxy> {
  const server = createServer((_request, response) => response.writeHead(426).end());
  const sockets = new Set<Socket>();
  server.on("upgrade", (request: IncomingMessage, socket: Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    bridge(request, socket, head);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const bound = server.address();
      if (typeof bound !== "object" || !bound) return reject(new Error("the proxy has no address"));
      resolve({
        address: `127.0.0.1:${bound.port}/v1`,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
