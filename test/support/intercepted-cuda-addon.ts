// A CUDA addon wrapped so that every step its models run passes through a test's function first: to record
// what the engine asked for, or to break the addon's contract on purpose and see a check catch it.

import type {
  CudaAddon,
  CudaModelSpec,
  NativeCudaModel,
  NativeStep,
} from "../../worker/engine/cuda/native.ts";

/** `addon` whose models hand each step to `intercept` and run the step it returns. */
export function interceptSteps(addon: CudaAddon, intercept: (step: NativeStep) => NativeStep): CudaAddon {
  return {
    deviceCount: () => addon.deviceCount(),
    CudaModel: class {
      constructor(spec: CudaModelSpec) {
        const model: NativeCudaModel = new addon.CudaModel(spec);
        const step = model.step.bind(model);
        // The native prototype's methods are read-only: shadow `step` on the instance instead.
        Object.defineProperty(model, "step", { value: (s: NativeStep) => step(intercept(s)) });
        // biome-ignore lint/correctness/noConstructorReturn: the addon's constructor yields the model itself.
        return model;
      }
    } as unknown as CudaAddon["CudaModel"],
  };
}
