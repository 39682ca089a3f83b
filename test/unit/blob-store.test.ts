// Blob stores: the SigV4 signer against AWS's published example, the S3-compatible store against an
// in-test server that re-derives each request's signature from what arrived on the wire (GETs, and PUTs
// whose body must match the signed sha256, and DELETEs), the URL and folder stores, size caps and the
// redirect policy of untrusted fetches, and openBlobStore's choice by URL. Every store must hand over the
// same bytes.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  ADAPTER_FILES,
  BlobNotFoundError,
  BlobStoreError,
  BlobTooLargeError,
  FolderBlobStore,
  HttpBlobStore,
  openBlobStore,
  openWritableBlobStore,
  S3BlobStore,
} from "../../worker/adapters/blob-store.ts";
import { signRequest } from "../../worker/adapters/sigv4.ts";
import { type S3Request, type S3Server, startS3Server } from "../support/s3-server.ts";

const CREDENTIALS = { accessKeyId: "AKIDLUMINETTEST", secretAccessKey: "secret/with+odd=chars" };
const REGION = "eu-test-1";
/** Keys with characters that URL and SigV4 encodings treat differently. */
const KEYS = ["org/adapter/v1", "org with space/ad+apter/ünï(1)"];
const PREFIX = "adapters/base";

let root: string;
let blobRoot: string;
let server: S3Server;
let endpoint: string;
/** What the server saw since the test began. */
let seen: S3Request[];
/** What the bucket holds, by request path. */
let objects: Map<string, Buffer>;

function filesOf(key: string): Record<string, Buffer> {
  return {
    "adapter_config.json": Buffer.from(JSON.stringify({ r: 4, key })),
    "adapter_model.safetensors": Buffer.from(`weights of ${key} `.repeat(5000)),
  };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-blobs-"));
  blobRoot = join(root, "folder");
  const plain = new Map<string, Buffer>();
  server = await startS3Server({
    credentials: CREDENTIALS,
    region: REGION,
    buckets: ["bucket"],
    // A plain origin beside the bucket: /plain/<key> (?chunked: no declared length, as a streaming
    // server sends) and /hop/inside|outside/<path>, a redirect to this server or to another.
    fallback: (req, res, path) => {
      const hop = /^\/hop\/(inside|outside)(\/.*)$/.exec(path);
      if (hop) {
        res.writeHead(302, { location: hop[1] === "inside" ? hop[2]! : `http://127.0.0.2:1${hop[2]}` }).end();
        return true;
      }
      const body = plain.get(path);
      if (!body) return false;
      if (req.url!.includes("?chunked")) res.writeHead(200).end(body);
      else res.writeHead(200, { "content-length": body.length }).end(body);
      return true;
    },
  });
  endpoint = server.endpoint;
  objects = server.objects;
  for (const key of KEYS) {
    for (const [file, bytes] of Object.entries(filesOf(key))) {
      mkdirSync(join(blobRoot, key), { recursive: true });
      writeFileSync(join(blobRoot, key, file), bytes);
      objects.set(`/bucket/${PREFIX}/${key}/${file}`, bytes);
      plain.set(`/plain/${key}/${file}`, bytes);
    }
  }
});

afterAll(async () => {
  await server.close();
  rmSync(root, { recursive: true, force: true });
});

beforeEach(() => {
  server.requests.length = 0;
  seen = server.requests;
});

function freshDir(): string {
  return mkdtempSync(join(root, "into-"));
}

function expectSameFiles(dir: string, key: string): void {
  for (const [file, bytes] of Object.entries(filesOf(key))) {
    // Buffer.equals: a deep toEqual walks 100 kB byte by byte.
    expect(readFileSync(join(dir, file)).equals(bytes), `${file} of ${key}`).toBe(true);
  }
}

describe("signRequest", () => {
  it("reproduces AWS's published SigV4 example for an S3 GET", () => {
    // "Example: GET Object" in AWS's Signature Version 4 documentation for S3.
    const headers = signRequest({
      method: "GET",
      url: new URL("https://examplebucket.s3.amazonaws.com/test.txt"),
      headers: { range: "bytes=0-9" },
      region: "us-east-1",
      service: "s3",
      credentials: {
        accessKeyId: "AKIAIOSFODNN7EXAMPLE",
        secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      },
      date: new Date("2013-05-24T00:00:00Z"),
    });
    expect(headers.authorization).toBe(
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request," +
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," +
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    );
    expect(headers["x-amz-date"]).toBe("20130524T000000Z");
    expect(headers.host).toBeUndefined();
  });

  it("signs a session token when the credentials carry one", () => {
    const headers = signRequest({
      method: "GET",
      url: new URL("https://h.example/b/k"),
      region: "auto",
      service: "s3",
      credentials: { ...CREDENTIALS, sessionToken: "token" },
    });
    expect(headers["x-amz-security-token"]).toBe("token");
    expect(headers.authorization).toContain(
      "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,",
    );
  });
});

describe("S3BlobStore", () => {
  const store = (secretAccessKey = CREDENTIALS.secretAccessKey) =>
    new S3BlobStore({
      endpoint,
      bucket: "bucket",
      prefix: PREFIX,
      region: REGION,
      credentials: { ...CREDENTIALS, secretAccessKey },
    });

  it("fetches both files with requests whose signatures check out, the same bytes as the folder store", async () => {
    for (const key of KEYS) {
      const viaS3 = freshDir();
      await store().fetchAdapter(key, viaS3);
      const viaFolder = freshDir();
      await new FolderBlobStore(blobRoot).fetchAdapter(key, viaFolder);
      expectSameFiles(viaS3, key);
      expectSameFiles(viaFolder, key);
    }
    expect(seen).toHaveLength(2 * KEYS.length);
    expect(seen.every((r) => r.signature === "valid" && r.shape)).toBe(true);
    expect(seen.map((r) => r.path)).toContain(`/bucket/${PREFIX}/${KEYS[1]}/adapter_model.safetensors`);
  });

  it("reports a refused signature with the server's own explanation", async () => {
    const fetching = store("wrong").fetchAdapter(KEYS[0]!, freshDir());
    await expect(fetching).rejects.toThrow(BlobStoreError);
    await expect(store("wrong").fetchAdapter(KEYS[0]!, freshDir())).rejects.toThrow(
      /403 Forbidden <Error><Code>SignatureDoesNotMatch/,
    );
    expect(seen.every((r) => r.signature === "invalid" && r.shape)).toBe(true);
  });

  it("reports a missing object as not found", async () => {
    await expect(store().fetchAdapter("org/missing/v1", freshDir())).rejects.toThrow(BlobNotFoundError);
  });
});

describe("S3BlobStore writes", () => {
  const store = (secretAccessKey = CREDENTIALS.secretAccessKey) =>
    new S3BlobStore({
      endpoint,
      bucket: "bucket",
      prefix: "uploads",
      region: REGION,
      credentials: { ...CREDENTIALS, secretAccessKey },
    });
  const KEY = "acme/ünï v1";

  it("PUTs both files with signed sha256 payloads, reads them back, and DELETEs them", async () => {
    const from = freshDir();
    for (const [file, bytes] of Object.entries(filesOf(KEY))) writeFileSync(join(from, file), bytes);
    await store().putAdapter(KEY, from);
    expect(seen.map((r) => [r.method, r.path, r.signature])).toEqual(
      ADAPTER_FILES.map((f) => ["PUT", `/bucket/uploads/${KEY}/${f}`, "valid"]),
    );
    const back = freshDir();
    await store().fetchAdapter(KEY, back);
    expectSameFiles(back, KEY);

    await store().removeAdapter(KEY);
    expect(seen.filter((r) => r.method === "DELETE").map((r) => r.signature)).toEqual(["valid", "valid"]);
    expect([...objects.keys()].some((k) => k.startsWith("/bucket/uploads/"))).toBe(false);
    await expect(store().fetchAdapter(KEY, freshDir())).rejects.toThrow(BlobNotFoundError);
  });

  it("reports a refused PUT with the server's explanation and leaves nothing behind", async () => {
    const from = freshDir();
    for (const [file, bytes] of Object.entries(filesOf(KEY))) writeFileSync(join(from, file), bytes);
    await expect(store("wrong").putAdapter(KEY, from)).rejects.toThrow(
      /PUT s3:\/\/bucket\/uploads\/.*adapter_config\.json: 403 Forbidden <Error><Code>SignatureDoesNotMatch/,
    );
    expect([...objects.keys()].some((k) => k.startsWith("/bucket/uploads/"))).toBe(false);
  });

  it("caps a fetched object's size", async () => {
    const key = `${KEYS[0]}/adapter_model.safetensors`;
    const s3 = new S3BlobStore({
      endpoint,
      bucket: "bucket",
      prefix: PREFIX,
      region: REGION,
      credentials: CREDENTIALS,
    });
    const into = join(freshDir(), "w");
    await expect(s3.fetchFile(key, into, { maxBytes: 1000 })).rejects.toThrow(BlobTooLargeError);
    expect(await s3.fetchFile(key, into, { maxBytes: 10_000_000 })).toBe(
      filesOf(KEYS[0]!)["adapter_model.safetensors"]!.length,
    );
  });
});

describe("HttpBlobStore", () => {
  it("GETs <base>/<key>/<file> without credentials, the same bytes as the folder store", async () => {
    const dir = freshDir();
    await new HttpBlobStore(`${endpoint}/plain/`).fetchAdapter(KEYS[1]!, dir);
    expectSameFiles(dir, KEYS[1]!);
    expect(seen.map((r) => [r.path, r.signature])).toEqual(
      ADAPTER_FILES.map((f) => [`/plain/${KEYS[1]}/${f}`, "none"]),
    );
  });

  it("reports a missing adapter as not found and a dead server as a store error", async () => {
    await expect(new HttpBlobStore(`${endpoint}/plain`).fetchAdapter("nope", freshDir())).rejects.toThrow(
      BlobNotFoundError,
    );
    await expect(new HttpBlobStore("http://127.0.0.1:1/x").fetchAdapter("k", freshDir())).rejects.toThrow(
      /GET http:\/\/127\.0\.0\.1:1\/x\/k\/adapter_config\.json/,
    );
  });
});

describe("HttpBlobStore fetches of untrusted files", () => {
  const file = `${KEYS[0]}/adapter_model.safetensors`;
  const size = filesOf(KEYS[0]!)["adapter_model.safetensors"]!.length;

  it("refuses a file over the cap, whether or not the server declares its length", async () => {
    const into = join(freshDir(), "w");
    for (const base of [`${endpoint}/plain`, `${endpoint}/plain?chunked`]) {
      const store = new HttpBlobStore(base);
      await expect(store.fetchFile(file, into, { maxBytes: size - 1 })).rejects.toThrow(
        new RegExp(`adapter_model\\.safetensors(\\?chunked)? is larger than ${size - 1} bytes`),
      );
      expect(await store.fetchFile(file, into, { maxBytes: size })).toBe(size);
    }
  });

  it("follows a redirect only to a location the caller allows", async () => {
    const into = join(freshDir(), "w");
    const store = new HttpBlobStore(`${endpoint}/hop`);
    const sameServer = (url: URL) => url.origin === endpoint;
    expect(await store.fetchFile(`inside/plain/${file}`, into, { redirectAllowed: sameServer })).toBe(size);
    await expect(
      store.fetchFile(`outside/plain/${file}`, into, { redirectAllowed: sameServer }),
    ).rejects.toThrow(/redirected to http:\/\/127\.0\.0\.2:1\/plain\/.*, which is not an allowed location/);
  });
});

describe("FolderBlobStore", () => {
  it("reports a missing adapter as not found and refuses keys that leave its root", async () => {
    const store = new FolderBlobStore(blobRoot);
    await expect(store.fetchAdapter("org/missing", freshDir())).rejects.toThrow(BlobNotFoundError);
    for (const key of ["../etc", "org/../../x", "/abs", "a//b", ""]) {
      await expect(store.fetchAdapter(key, freshDir())).rejects.toThrow(/is not a relative path/);
    }
  });

  it("puts an adapter under its key and removes it again", async () => {
    const store = new FolderBlobStore(join(root, "written"));
    const from = freshDir();
    for (const [file, bytes] of Object.entries(filesOf(KEYS[1]!))) writeFileSync(join(from, file), bytes);
    await store.putAdapter(KEYS[1]!, from);
    const back = freshDir();
    await store.fetchAdapter(KEYS[1]!, back);
    expectSameFiles(back, KEYS[1]!);
    await store.removeAdapter(KEYS[1]!);
    await expect(store.fetchAdapter(KEYS[1]!, freshDir())).rejects.toThrow(BlobNotFoundError);
    await expect(store.putAdapter("../escape", from)).rejects.toThrow(/is not a relative path/);
  });
});

describe("openBlobStore", () => {
  const env = {
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  };

  it("chooses the store by URL", () => {
    expect(openBlobStore(blobRoot, {})).toBeInstanceOf(FolderBlobStore);
    expect(openBlobStore(pathToFileURL(blobRoot).href, {}).location).toBe(blobRoot);
    expect(openBlobStore("https://cdn.example/adapters", {})).toBeInstanceOf(HttpBlobStore);
    expect(openBlobStore("s3://bucket/p?endpoint=http://127.0.0.1:9000", env).location).toBe(
      "s3://bucket/p at http://127.0.0.1:9000",
    );
    expect(openBlobStore("r2://bucket?account=abc123", env).location).toBe(
      "s3://bucket at https://abc123.r2.cloudflarestorage.com",
    );
    expect(openBlobStore("s3://bucket/p", { ...env, AWS_REGION: "eu-west-3" }).location).toBe(
      "s3://bucket/p at https://bucket.s3.eu-west-3.amazonaws.com",
    );
  });

  it("opens a writable store from a folder or bucket URL, never from http(s)", () => {
    expect(openWritableBlobStore(blobRoot, {})).toBeInstanceOf(FolderBlobStore);
    expect(openWritableBlobStore("r2://bucket/p?account=abc123", env)).toBeInstanceOf(S3BlobStore);
    expect(() => openWritableBlobStore("https://cdn.example/adapters", env)).toThrow(/read-only/);
  });

  it("explains what a bucket URL is missing", () => {
    expect(() => openBlobStore("s3://bucket/p", {})).toThrow(
      /set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
    );
    expect(() => openBlobStore("r2://bucket/p", env)).toThrow(
      /add \?account=<account id> or \?endpoint=<url>/,
    );
    expect(() => openBlobStore("s3://bucket/p?endpoin=x", env)).toThrow(/unknown parameter endpoin/);
    expect(() => openBlobStore("gs://bucket/p", env)).toThrow(/unknown scheme gs:\/\//);
  });

  it("opens a working S3-compatible store from an s3:// URL with credentials from the environment", async () => {
    const store = openBlobStore(`s3://bucket/${PREFIX}?endpoint=${endpoint}&region=${REGION}`, env);
    const dir = freshDir();
    await store.fetchAdapter(KEYS[0]!, dir);
    expectSameFiles(dir, KEYS[0]!);
    expect(seen.every((r) => r.signature === "valid")).toBe(true);
  });
});
