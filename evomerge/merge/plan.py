"""Recipe checks (before any work) and per-tensor parameter resolution, shared by both execution paths."""

from __future__ import annotations

from typing import Iterable, Optional

from evomerge.errors import ConfigError
from evomerge.models.arch import BlockLayout
from evomerge.merge.registry import MergeMethod, TensorParams, get_method
from evomerge.models.vocab import build_vocab_map
from evomerge.recipe import MergeRecipe


def method_of(recipe: MergeRecipe) -> type[MergeMethod]:
    if not isinstance(recipe, MergeRecipe):
        raise ConfigError(f"the merge engine takes a parameter-space recipe (kind: merge), got {type(recipe).__name__}")
    return get_method(recipe.method)


def input_models(recipe: MergeRecipe, method: type[MergeMethod]) -> list[str]:
    """The models that enter ``merge_tensor`` as ``sources``/``deltas``, in recipe order (base excluded when the
    method takes it as the base)."""
    names = [m.model for m in recipe.models]
    if method.needs_base:
        names = [n for n in names if n != recipe.base]
    return names


def validate_recipe(recipe: MergeRecipe) -> type[MergeMethod]:
    """Check method, parameter names/types/bounds/scopes and model counts; return the method class."""
    method = method_of(recipe)
    where = f"method {recipe.method!r}"
    if method.needs_base and not recipe.base:
        raise ConfigError(f"{where} needs a base model (set 'base:')")
    n = len(input_models(recipe, method))
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        want = (f"exactly {method.min_models}" if method.min_models == method.max_models
                else f"at least {method.min_models}")
        raise ConfigError(f"{where} takes {want} model(s) besides the base, got {n}")

    def check(params: dict, ctx: str, model_level: bool) -> None:
        for key, value in params.items():
            spec = method.param(key)
            if spec is None:
                known = ", ".join(p.name for p in method.params)
                raise ConfigError(f"{ctx}: unknown parameter {key!r} for {where} (known: {known})")
            if model_level and spec.scope == "global":
                raise ConfigError(f"{ctx}: parameter {key!r} of {where} is global; it cannot be set per model")
            spec.check(value, ctx)

    check(recipe.params, "params", False)
    for m in recipe.models:
        check(m.params, f"models[{m.model}]", True)
    for i, ov in enumerate(recipe.overrides):
        check(ov.params, f"overrides[{i}]", ov.model is not None)
    return method


def check_layers(recipe: MergeRecipe, layout: BlockLayout) -> None:
    """Refuse per-layer overrides the model's block list cannot honour (no blocks, or fewer than named)."""
    for i, ov in enumerate(recipe.overrides):
        if ov.layers is None:
            continue
        if layout.prefix is None:
            raise ConfigError(f"overrides[{i}]: layer range {list(ov.layers)} given, but the model has no block "
                              "list evomerge can find (per-layer recipes need one)")
        if ov.layers[1] > layout.num_layers:
            raise ConfigError(f"overrides[{i}]: layer range {list(ov.layers)} is outside the model "
                              f"({layout.num_layers} layers: {layout.prefix}.0..{layout.num_layers - 1})")


def check_modules(recipe: MergeRecipe, names: list[str], lead: str) -> None:
    """Refuse an override whose module filters match no tensor of the lead (it would change nothing)."""
    from evomerge.models.roles import matching

    for i, ov in enumerate(recipe.overrides):
        if ov.modules is not None and not matching(ov.modules, names):
            raise ConfigError(f"overrides[{i}]: module filter {ov.modules} matches no tensor of {lead}")


def resolve_tensor_params(
    recipe: MergeRecipe, method: type[MergeMethod], models: list[str], tensor: str, layer: Optional[int]
) -> TensorParams:
    """Shared and per-model parameter values for one tensor (in block ``layer``), defaults filled in, checked."""
    shared_raw = recipe.global_params(tensor, layer)
    shared = {}
    for spec in method.params:
        if spec.scope == "global":
            shared[spec.name] = spec.type(shared_raw[spec.name]) if spec.name in shared_raw else spec.default
    per_model: dict[str, list] = {s.name: [] for s in method.params if s.scope == "model"}
    for model in models:
        raw = recipe.resolve_params(model, tensor, layer)
        for spec in method.params:
            if spec.scope == "model":
                per_model[spec.name].append(spec.type(raw[spec.name]) if spec.name in raw else spec.default)
    p = TensorParams(shared, per_model)
    _check_combinations(recipe, method, models, tensor, p)
    return p


def _check_combinations(recipe, method, models, tensor, p: TensorParams) -> None:
    if "epsilon" in p.per_model:
        for model, d, e in zip(models, p.per_model["density"], p.per_model["epsilon"]):
            if d < 1 and not (0 < d - e and d + e < 1):
                raise ConfigError(
                    f"{recipe.method}: density {d} +/- epsilon {e} must stay inside (0, 1) ({model}, {tensor})"
                )


def plan_params(recipe: MergeRecipe, method: type[MergeMethod], models: list[str],
                tensors: Iterable[str], layout: BlockLayout) -> dict[str, TensorParams]:
    """Resolve every tensor up front, so that a bad combination fails before any compute."""
    return {t: resolve_tensor_params(recipe, method, models, t, layout.layer_of(t)) for t in tensors}


class MergePlan:
    """A checked recipe over opened checkpoints: every tensor's parameters resolved, ready to merge tensor by
    tensor through the engine. Built per candidate (cheap: headers are already read)."""

    def __init__(self, recipe: MergeRecipe, ckpts: dict):
        from evomerge.models.compat import layout_of

        method_cls = validate_recipe(recipe)
        self.recipe = recipe
        self.models = input_models(recipe, method_cls)
        self.base = recipe.base if method_cls.needs_base else None
        missing = [m for m in self.models + ([self.base] if self.base else []) if m not in ckpts]
        if missing:
            raise ConfigError(f"recipe names model(s) the merger does not hold: {', '.join(missing)} "
                              f"(held: {', '.join(ckpts)})")
        self.ckpts = ckpts
        self.lead = ckpts[self.base or self.models[0]]
        self.layout = layout_of(self.lead)
        check_layers(recipe, self.layout)
        self.names = self.lead.ordered_names()
        check_modules(recipe, self.names, self.base or self.models[0])
        self.params = plan_params(recipe, method_cls, self.models, self.names, self.layout)
        self.method = method_cls()
        lead_ref = self.base or self.models[0]
        self.vocab = build_vocab_map(ckpts, lead_ref, self.models, recipe.vocab)
        self.rng_stream = None  # made per device on the first merge (random_stream: mergekit)

    @property
    def tokenizer_path(self):
        """The folder whose tokenizer the merged model gets (the lead's, or the union's largest)."""
        return self.ckpts[self.vocab.tokenizer_ref].path if self.vocab else self.lead.path

    def vocab_rows(self) -> Optional[int]:
        """Embedding rows of the merged model when the sources' vocabularies differ (else None: as stored)."""
        return self.vocab.out_rows if self.vocab else None

    def _stream(self, device):
        """mergekit's random stream over this recipe's tensors (None unless ``random_stream: mergekit`` and the
        method draws masks)."""
        if getattr(self.recipe, "random_stream", "evomerge") != "mergekit" or not self.method.random_draws():
            return None
        if self.rng_stream is None or self.rng_stream.device != device:
            from evomerge.merge.mergekit_stream import MergekitStream

            draws = [(n, i, self.shape(n)) for n in self.names
                     for i, d in enumerate(self.params[n].per_model.get("density", [])) if d < 1]
            self.rng_stream = MergekitStream(self.recipe.seed, draws, device)
        return self.rng_stream

    def order_free(self) -> bool:
        """Whether tensors may merge in any order, side by side: not with mergekit's random stream, which draws
        every tensor's mask from one generator in name order."""
        return getattr(self.recipe, "random_stream", "evomerge") != "mergekit" or not self.method.random_draws()

    def shape(self, name: str) -> tuple[int, ...]:
        if self.vocab and name in self.vocab.tensors:
            return self.vocab.out_shape(self.lead.shape(name))
        return self.lead.shape(name)

    def merge(self, name: str, write, workspace, cache, dest=None) -> None:
        """Merge tensor ``name``; ``write(r0, r1, float32_rows)`` gets each chunk; ``dest``: the destination's
        2-D view, written directly where possible (see ``engine.merge_tensor``)."""
        from evomerge.merge.engine import merge_tensor

        if self.vocab and name in self.vocab.tensors:
            from evomerge.merge.vocab_rows import merge_vocab_tensor  # torch: only where tensors are merged

            return merge_vocab_tensor(self, name, write, workspace, cache, dest)
        base = self.ckpts[self.base].view(name) if self.base else None
        merge_tensor(self.method, self.params[name], name, self.models, base,
                     [self.ckpts[m].view(name) for m in self.models], write, workspace, cache,
                     seed=self.recipe.seed, cache_scope=self.base or "", dest=dest,
                     rng_stream=self._stream(workspace.device))
