"""Token prices for `rare estimate`: a small built-in table, overridable from the config.

In: a model name and, optionally, the config's :class:`rare_core.config.Prices`. Out:
:func:`price_for` -> :class:`ModelPrice` (per million tokens, list and batch, with their
currency: USD for the table, the config's ``prices.currency`` for its own), or None when the
model is not in the table and the config gives no prices.

The table (:data:`PRICE_TABLE`) holds list prices in USD per million tokens, standard tier,
input without prompt-cache discounts:

* OpenAI: the OpenAI API pricing page (openai.com/api/pricing), figures as of 2025-12 (unchanged
  in copies of that page dated 2026-03 and 2026-06). Batch = 50% of list: the Batch API's discount.
* DeepSeek: the DeepSeek API docs, "Models & Pricing" (api-docs.deepseek.com/quick_start/pricing),
  DeepSeek-V3.2 prices of 2025-12 (both aliases: $0.28 input on a cache miss, $0.42 output; the
  $0.028 cache-hit input price is not used). DeepSeek has no batch API: no batch price.

Prices change: set ``prices`` in the config to use your own (they take precedence over the table).
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from rare_core.config import Prices

PRICES_AS_OF = "2025-12"
PRICES_CURRENCY = "USD"  # of every figure in PRICE_TABLE
PRICES_SOURCE = (f"built-in table ({PRICES_AS_OF}; OpenAI API pricing page, DeepSeek API docs); "
                 "set `prices` in the config to override")
BATCH_DISCOUNT = 0.5  # OpenAI's Batch API: half the list price, input and output


class ModelPrice(BaseModel):
    """Prices per million tokens for one model, in ``currency``."""

    model: str  # the table entry that matched, or the configured model name for an override
    input_per_million: float
    output_per_million: float
    batch_input_per_million: float | None = None  # None: no batch API for this model
    batch_output_per_million: float | None = None
    source: str  # where the figures come from (the table and its date, or the config)
    currency: str = PRICES_CURRENCY

    @property
    def has_batch(self) -> bool:
        return self.batch_input_per_million is not None and self.batch_output_per_million is not None

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
        """Cost of the tokens at list (or batch) prices; None for batch when there is no batch price."""
        if batch:
            if not self.has_batch:
                return None
            rate_in, rate_out = self.batch_input_per_million, self.batch_output_per_million
        else:
            rate_in, rate_out = self.input_per_million, self.output_per_million
        return (prompt_tokens * rate_in + completion_tokens * rate_out) / 1e6


def _openai(inp: float, out: float) -> tuple[float, float, float | None, float | None]:
    return inp, out, inp * BATCH_DISCOUNT, out * BATCH_DISCOUNT


# model -> (input, output, batch input, batch output), USD per million tokens (see the module docstring).
PRICE_TABLE: dict[str, tuple[float, float, float | None, float | None]] = {
    "gpt-4o": _openai(2.50, 10.00),
    "gpt-4o-2024-05-13": _openai(5.00, 15.00),  # the first gpt-4o snapshot kept its launch price
    "gpt-4o-mini": _openai(0.15, 0.60),
    "gpt-4.1": _openai(2.00, 8.00),
    "gpt-4.1-mini": _openai(0.40, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.40),
    "o3-mini": _openai(1.10, 4.40),
    "o4-mini": _openai(1.10, 4.40),
    "deepseek-chat": (0.28, 0.42, None, None),
    "deepseek-reasoner": (0.28, 0.42, None, None),
}

# A dated snapshot of a table model ("gpt-4o-mini-2024-07-18") is priced as the model.
_SNAPSHOT = re.compile(r"^(?P<base>.+?)-\d{4}-\d{2}-\d{2}$")
# Provider prefixes some gateways put before the model name ("openai/gpt-4o").
_PROVIDER = re.compile(r"^(openai|deepseek|azure)/", re.IGNORECASE)


def table_entry(model: str | None) -> str | None:
    """The :data:`PRICE_TABLE` key that prices ``model``, or None."""
    if not model:
        return None
    name = _PROVIDER.sub("", model.strip()).lower()
    if name in PRICE_TABLE:
        return name
    snap = _SNAPSHOT.match(name)
    if snap and snap["base"] in PRICE_TABLE:
        return snap["base"]
    return None


def price_for(model: str | None, prices_override: Prices | None = None) -> ModelPrice | None:
    """The prices of ``model``: the config's ``prices`` when given (batch = half of them unless
    the override names its own batch prices), else the built-in table, else None."""
    if prices_override is not None:
        inp, out = prices_override.input_per_million, prices_override.output_per_million
        b_in = prices_override.batch_input_per_million
        b_out = prices_override.batch_output_per_million
        return ModelPrice(model=model or "", input_per_million=inp, output_per_million=out,
                          batch_input_per_million=inp * BATCH_DISCOUNT if b_in is None else b_in,
                          batch_output_per_million=out * BATCH_DISCOUNT if b_out is None else b_out,
                          source="config `prices`" + ("" if b_in is not None and b_out is not None
                                                      else " (batch: half of them)"),
                          currency=prices_override.currency)
    key = table_entry(model)
    if key is None:
        return None
    inp, out, b_in, b_out = PRICE_TABLE[key]
    return ModelPrice(model=key, input_per_million=inp, output_per_million=out,
                      batch_input_per_million=b_in, batch_output_per_million=b_out, source=PRICES_SOURCE)
