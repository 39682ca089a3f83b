// The action of a command whose issue has not landed yet: it says so and exits non-zero.
export function notImplemented(command: string, issue: string): () => never {
  return () => {
    process.stderr.write(`luminet ${command}: not implemented yet (${issue})\n`);
    process.exit(2);
  };
}
