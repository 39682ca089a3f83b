// `luminet bench <name>`: the benchmarks of ../shared/BENCH.md; results go to bench/results/<name>.json.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerBench(program: Command): void {
  const bench = program.command("bench").description("benchmarks (see docs/BENCHMARKS.md)");
  bench
    .command("engine")
    .description("mixed-adapter decode throughput vs base-only, against a measured roofline")
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option("--layers <n>", "override the layer count")
    .option("--json", "print one JSON line")
    .action(notImplemented("bench engine", "lands with the engine issue"));
  for (const [name, what] of [
    ["switch", "hot adapter overhead"],
    ["cold-load", "adapter load time from each tier"],
    ["gateway", "gateway added latency and capacity"],
    ["fleet", "routing quality across workers"],
    ["e2e", "the whole path through the openai client"],
  ] as const) {
    bench
      .command(name)
      .description(what)
      .option("--json", "print one JSON line")
      .action(notImplemented(`bench ${name}`, "not built yet"));
  }
}
