"""f_caption: the LSTM captioner of CamJoint, a causal decoder conditioned on the image vector z.

`CamJointLSTMCaptioner` is a small causal language model in Transformers' sense: `forward(input_ids, image_embeds=...,
cache=...)` returns next-token `logits` and the recurrent state, and `generate()` (GenerationMixin) drives greedy,
beam search and sampling through that contract, as BLIP's joint model drives its text decoder. `CamJointModel` owns
one as `model.captioner` and delegates its `generate` to it.

Why an explicit loop instead of `nn.LSTM`: the exact CAM loss differentiates through the LSTM's backward pass, which
cuDNN cannot do ("Double backwards is not supported for CuDNN RNNs"), and under CPU bf16 autocast `nn.LSTM` goes to
oneDNN, which fails. The loop is made of plain matmuls and pointwise ops, so the same code path runs on CPU and GPU,
in fp32 and bf16, first and second order.

This file ships next to every checkpoint as remote code: it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.generation import utils as _generation_utils
from transformers.utils import ModelOutput

from .cam_core import at_least_float32
from .configuration_cam_joint import CamJointConfig

# The generation loop's name for a model's cache: `cache` since Transformers 5.24; before it, `cache_params` for
# caches that are not key/value caches. The output and `prepare_inputs_for_generation` speak whichever it reads
# (a `cache_params` dataclass field would not do: 5.24's ModelOutput renames it to `cache` and overwrites that).
GENERATION_CACHE_KEY = ("cache" if "cache" in getattr(_generation_utils, "ALL_CACHE_NAMES", ("cache",))
                        else "cache_params")


@dataclass
class CamJointCaptionerOutput(ModelOutput):
    """Output of [`CamJointLSTMCaptioner`]: next-token `logits` (batch, length, vocab_size) and the LSTM `cache`
    after the last token (what `generate()` carries between steps)."""

    logits: Tensor | None = None
    cache: "LSTMCaptionCache | None" = None


class LSTMCaptionCache:
    """The captioner's recurrent state between generation steps: h and c (layers, batch, hidden) and z (batch, D).

    Beam search reorders it with `index_select` along the batch dimension (dim 1 of h/c, dim 0 of z); without that
    reorder a beam would continue another beam's sentence, silently.
    """

    def __init__(self, hidden: Tensor, cell: Tensor, image_embeds: Tensor, gate_bias: Tensor | None = None):
        self.hidden, self.cell, self.image_embeds = hidden, cell, image_embeds
        self.gate_bias = gate_bias  # every_step conditioning: image_to_gates(z), computed once per caption

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.hidden = self.hidden.index_select(1, beam_idx.to(self.hidden.device))
        self.cell = self.cell.index_select(1, beam_idx.to(self.cell.device))
        self.image_embeds = self.image_embeds.index_select(0, beam_idx.to(self.image_embeds.device))
        if self.gate_bias is not None:
            self.gate_bias = self.gate_bias.index_select(0, beam_idx.to(self.gate_bias.device))


class LSTMLayer(nn.Module):
    """One LSTM layer written as an explicit loop over time steps (gate order i, f, o, g).

    The input projection of all time steps is one matmul; only the recurrence loops.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))

    def forward(self, inputs: Tensor, hidden: Tensor, cell: Tensor, gate_bias: Tensor | None = None,
                mask: Tensor | None = None):
        """inputs (B, T, In); hidden, cell (B, H); gate_bias (B, 4H) added at every step (LRCN conditioning);
        mask (B, T): where False (left padding of a batched prompt) the state is carried through unchanged."""
        projected = F.linear(inputs, self.weight_ih, self.bias)
        if gate_bias is not None:
            projected = projected + gate_bias.unsqueeze(1)
        outputs = []
        weight_hh_t = self.weight_hh.t()
        for step in range(inputs.shape[1]):
            gates = torch.addmm(projected[:, step], hidden, weight_hh_t)
            sig = torch.sigmoid(gates[:, : 3 * self.hidden_size])
            input_gate, forget_gate, output_gate = sig.chunk(3, 1)
            candidate = torch.tanh(gates[:, 3 * self.hidden_size:])
            new_cell = forget_gate * cell + input_gate * candidate
            new_hidden = output_gate * torch.tanh(new_cell)
            if mask is not None:
                keep = mask[:, step, None]
                new_cell, new_hidden = torch.where(keep, new_cell, cell), torch.where(keep, new_hidden, hidden)
            cell, hidden = new_cell, new_hidden
            outputs.append(hidden)
        return torch.stack(outputs, 1), hidden, cell


class CamJointLSTMCaptioner(PreTrainedModel, GenerationMixin):
    """f_caption: an LSTM language model conditioned on the image vector z.

    Conditioning (`config.conditioning`): `every_step` (LRCN, z feeds every step's gates), `init_state` (z sets h0 and
    c0 through a linear layer, as in semantic regularisation) or `first_step` (Show-and-Tell: z, projected to a word
    embedding, is the input of step 0).

    A sub-model: `CamJointModel` builds it and its `post_init` initialises it (so the weights a seed gives do not
    depend on whether the captioner is a module or a model of its own).
    """

    config_class = CamJointConfig
    config: CamJointConfig
    base_model_prefix = "captioner"
    main_input_name = "input_ids"
    _no_split_modules = ["CamJointLSTMCaptioner"]

    def __init__(self, config: CamJointConfig, image_size: int):
        super().__init__(config)
        hidden, embed = config.hidden_size, config.word_embedding_size
        self.embed_tokens = nn.Embedding(config.vocab_size, embed, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(
            LSTMLayer(embed if i == 0 else hidden, hidden) for i in range(config.num_lstm_layers)
        )
        if config.conditioning == "every_step":
            self.image_to_gates = nn.Linear(image_size, 4 * hidden, bias=False)
        elif config.conditioning == "init_state":
            self.image_to_state = nn.Linear(image_size, 2 * config.num_lstm_layers * hidden)
        else:
            self.image_to_embedding = nn.Linear(image_size, embed)
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(hidden, config.vocab_size)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, LSTMLayer):
            bound = module.hidden_size ** -0.5  # nn.LSTM's default init
            nn.init.uniform_(module.weight_ih, -bound, bound)
            nn.init.uniform_(module.weight_hh, -bound, bound)
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.bias[module.hidden_size: 2 * module.hidden_size])  # forget-gate bias 1
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()

    # ------------------------------------------------------------------ the recurrence
    def initial_state(self, image_embeds: Tensor) -> LSTMCaptionCache:
        batch, layers, hidden = image_embeds.shape[0], self.config.num_lstm_layers, self.config.hidden_size
        if self.config.conditioning == "init_state":
            state = torch.tanh(self.image_to_state(image_embeds)).view(batch, 2, layers, hidden)
            return LSTMCaptionCache(state[:, 0].transpose(0, 1), state[:, 1].transpose(0, 1), image_embeds)
        zeros = image_embeds.new_zeros(layers, batch, hidden)
        cache = LSTMCaptionCache(zeros, zeros, image_embeds)
        if self.config.conditioning == "first_step":
            _, cache = self.run(self.image_to_embedding(image_embeds).unsqueeze(1), cache)
        return cache

    def run(self, inputs: Tensor, cache: LSTMCaptionCache,
            mask: Tensor | None = None) -> tuple[Tensor, LSTMCaptionCache]:
        """Run the LSTM stack over input embeddings (B, T, E) from `cache`; returns outputs (B, T, H), new cache."""
        gate_bias = None
        if self.config.conditioning == "every_step":
            gate_bias = cache.gate_bias if cache.gate_bias is not None else self.image_to_gates(cache.image_embeds)
        hiddens, cells = [], []
        for index, layer in enumerate(self.layers):
            inputs, hidden, cell = layer(inputs, cache.hidden[index], cache.cell[index],
                                         gate_bias if index == 0 else None, mask)
            hiddens.append(hidden)
            cells.append(cell)
        return inputs, LSTMCaptionCache(torch.stack(hiddens), torch.stack(cells), cache.image_embeds, gate_bias)

    def forward(self, input_ids: Tensor, image_embeds: Tensor | None = None, cache: LSTMCaptionCache | None = None,
                attention_mask: Tensor | None = None, use_cache: bool | None = None,
                cache_params: LSTMCaptionCache | None = None, return_dict: bool | None = None,
                **kwargs) -> CamJointCaptionerOutput:
        """Next-token logits (B, T, V) for `input_ids` (B, T), continuing from `cache` or starting from z.

        Args:
            input_ids: caption tokens starting with bos (teacher forcing), or the last generated token (with `cache`).
            image_embeds: z (B, D), the image vector the captioner is conditioned on; needed without `cache`.
            cache: the state after the tokens before `input_ids` (generation).
            attention_mask: accepted for the generation loop; padding is read from `pad_token_id` (left padding of a
                batched prompt carries the state through unchanged; right padding needs no mask in a causal model).
            cache_params: the name Transformers < 5.24 passes `cache` under.
        """
        cache = cache if cache is not None else cache_params
        mask = None
        if cache is None:
            if image_embeds is None:
                raise ValueError("the captioner needs image_embeds (z) to start a caption, or a cache to continue one")
            cache = self.initial_state(image_embeds)
            # Batched prompts are left-padded: padding must not move the LSTM before the prompt's bos. Only LEFT
            # padding: a pad after the first real token (use_cache=False re-runs the whole sequence) is fed exactly
            # as the cached path fed it.
            real = (input_ids != self.config.pad_token_id).cumsum(1) > 0
            mask = None if bool(real.all()) else real
        outputs, cache = self.run(self.dropout(self.embed_tokens(input_ids)), cache, mask)
        out = CamJointCaptionerOutput(logits=self.lm_head(self.dropout(outputs)), cache=cache)
        if GENERATION_CACHE_KEY != "cache":
            out[GENERATION_CACHE_KEY] = cache  # Transformers < 5.24 reads it under this name (not a field there)
        return out

    # ------------------------------------------------------------------ generation
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the LSTM state is not a key/value cache

    def _reorder_cache(self, cache: LSTMCaptionCache, beam_idx: Tensor) -> LSTMCaptionCache:
        cache.reorder_cache(beam_idx)
        return cache

    def prepare_inputs_for_generation(self, input_ids: Tensor, cache: LSTMCaptionCache | None = None,
                                      image_embeds: Tensor | None = None, use_cache: bool | None = None,
                                      cache_params: LSTMCaptionCache | None = None, **kwargs):
        cache = cache if cache is not None else cache_params  # `cache_params`: Transformers < 5.24
        if cache is not None and use_cache is not False:
            return {"input_ids": input_ids[:, -1:], "cache": cache}
        return {"input_ids": input_ids, "image_embeds": image_embeds}

    def decode(self, image_embeds: Tensor, max_length: int, sample: bool = False):
        """Batched greedy decoding (or, with `sample`, multinomial sampling from the model's distribution) that also
        returns the chosen tokens' log-probabilities, with the autograd graph when grad is enabled: a caption's score
        comes out of the decoding pass itself, no second, teacher-forced pass over the same tokens. The CAM loss
        scores its predicted (greedy) caption this way; self-critical training its sampled one.

        Returns tokens (B, L) = bos, w1, ..., eos, pad...; token_log_probs and token_mask (B, L-1) for w1..eos.
        """
        cfg = self.config
        batch = image_embeds.shape[0]
        tokens = torch.full((batch, 1), cfg.bos_token_id, dtype=torch.long, device=image_embeds.device)
        running = torch.ones(batch, dtype=torch.bool, device=image_embeds.device)
        cache = self.initial_state(image_embeds)
        never = torch.tensor([cfg.pad_token_id, cfg.bos_token_id], device=image_embeds.device)
        log_probs, masks = [], []
        for _ in range(max_length - 1):
            step = self(tokens[:, -1:], cache=cache)
            cache = step.cache
            step_log_probs = torch.log_softmax(at_least_float32(step.logits[:, -1]), -1)
            # pad and bos are never chosen (as the saved generation config's suppress_tokens make generate() do);
            # the scores stay the model's own log-probabilities.
            allowed = step_log_probs.detach().index_fill(1, never, float("-inf"))
            if sample:
                next_token = torch.multinomial(allowed.softmax(-1), 1).squeeze(1)
            else:
                next_token = allowed.argmax(-1)
            log_probs.append(step_log_probs.gather(1, next_token[:, None]).squeeze(1))
            masks.append(running)
            next_token = torch.where(running, next_token, torch.full_like(next_token, cfg.pad_token_id))
            tokens = torch.cat([tokens, next_token[:, None]], 1)
            running = running & (next_token != cfg.eos_token_id)
            if not bool(running.any()):
                break
        return tokens, torch.stack(log_probs, 1), torch.stack(masks, 1).to(log_probs[0].dtype)


__all__ = ["CamJointLSTMCaptioner", "CamJointCaptionerOutput", "LSTMCaptionCache", "LSTMLayer",
           "GENERATION_CACHE_KEY"]
