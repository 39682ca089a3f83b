// Model ids as customers write them: `<base>:<org>/<adapter>` names an adapter (or an alias) of an org on a
// base model; a bare `<base>` runs the base model alone. Base names may hold "/" and ":" themselves
// ("meta-llama/Llama-3.1-8B", "qwen2.5:7b"), so only a last ":" followed by exactly one "org/name" pair
// starts an adapter reference.
export interface ModelId {
  base: string;
  /** null for a bare base. */
  adapter: { org: string; name: string } | null;
}

export function parseModelId(model: string): ModelId {
  const colon = model.lastIndexOf(":");
  if (colon > 0) {
    const parts = model.slice(colon + 1).split("/");
    if (parts.length === 2 && parts[0] && parts[1]) {
      return { base: model.slice(0, colon), adapter: { org: parts[0], name: parts[1] } };
    }
  }
  return { base: model, adapter: null };
}

export function formatModelId(base: string, adapter: { org: string; name: string } | null): string {
  return adapter ? `${base}:${adapter.org}/${adapter.name}` : base;
}
