// Where the LoRA bank tensors live. The host store keeps them in typed arrays that onnxruntime-node wraps
// without copying, so a write is visible to the next run and a step pays nothing to feed them. A device
// store (device-bank-store.ts) keeps them in GPU buffers and writes rows with a small scatter session.
import { Tensor } from "onnxruntime-node";
import type { ComputeDtype } from "./device.ts";
import { float32ToFloat16 } from "./dtype.ts";

export interface BankStore {
  /** Overwrites rows [firstRow, firstRow + rowCount) of a bank with row-major values. */
  writeRows(name: string, firstRow: number, rowCount: number, values: Float32Array): Promise<void>;
  /** The current tensors to feed, by graph input name. */
  tensors(): Record<string, Tensor>;
  /**
   * Rows [firstRow, firstRow + rowCount) of a bank as a tensor that shares the bank's memory, so later
   * writes show through. Only a store in host memory can; others throw.
   */
  rowsView(name: string, firstRow: number, rowCount: number): Tensor;
}

export interface BankSpec {
  name: string;
  rows: number;
  width: number;
}

export class HostBankStore implements BankStore {
  private readonly banks = new Map<
    string,
    { data: Float32Array | Uint16Array; width: number; tensor: Tensor }
  >();

  constructor(
    layout: BankSpec[],
    private readonly dtype: ComputeDtype,
  ) {
    for (const { name, rows, width } of layout) {
      const data = dtype === "float32" ? new Float32Array(rows * width) : new Uint16Array(rows * width);
      this.banks.set(name, { data, width, tensor: new Tensor(dtype, data, [rows, width]) });
    }
  }

  async writeRows(name: string, firstRow: number, rowCount: number, values: Float32Array): Promise<void> {
    const bank = this.banks.get(name);
    if (!bank) throw new Error(`no LoRA bank named ${name}`);
    if (values.length !== rowCount * bank.width) {
      throw new Error(`bank ${name}: ${values.length} values for ${rowCount} rows of width ${bank.width}`);
    }
    bank.data.set(this.dtype === "float32" ? values : float32ToFloat16(values), firstRow * bank.width);
  }

  tensors(): Record<string, Tensor> {
    return Object.fromEntries([...this.banks].map(([name, bank]) => [name, bank.tensor]));
  }

  rowsView(name: string, firstRow: number, rowCount: number): Tensor {
    const bank = this.banks.get(name);
    if (!bank) throw new Error(`no LoRA bank named ${name}`);
    const rows = bank.data.subarray(firstRow * bank.width, (firstRow + rowCount) * bank.width);
    return new Tensor(this.dtype, rows, [rowCount, bank.width]);
  }
}
