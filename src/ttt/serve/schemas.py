"""Request bodies of the server (OpenAI's wire format for completions, plus the session extension), validated by
pydantic: unknown fields, wrong types and values out of range are refused with a message naming the field.

Types are strict ("0.5" is not a number, "yes" not a boolean); an integer is accepted where a float is expected."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator, model_validator

# a number (int or float, never a string), finite
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
SEED_END = 2**63  # choice i samples with seed + i, which must stay below this (a torch generator seed)


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: `include_usage` adds a last chunk with the token counts."""

    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """`POST /v1/completions`. `prompt`: text (BOS is prepended when the state is fresh) or a list of token ids
    (read as given). `session_id` (extension): read the prompt on top of that session's state and store the state
    back afterwards. Extensions: `top_k` (0 = off), `return_token_ids` (each choice also carries the generated ids),
    `ignore_eos` (generate exactly max_tokens tokens, as load tests do). OpenAI fields this server does not implement
    are accepted only at their neutral value."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    prompt: StrictStr | list[Annotated[int, Field(strict=True)]]
    max_tokens: Annotated[int, Field(strict=True, ge=1)] = 16
    # OpenAI's range; below GREEDY_BELOW (sampling.py) sampling is greedy
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[Number, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(strict=True, ge=0)] = 0
    seed: Annotated[int, Field(strict=True, ge=0, lt=SEED_END)] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(strict=True, ge=1)] = 1
    logprobs: Annotated[int, Field(strict=True, ge=0, le=5)] | None = None
    session_id: StrictStr | None = None
    return_token_ids: StrictBool = False
    ignore_eos: StrictBool = False
    user: StrictStr | None = None
    echo: StrictBool = False
    best_of: Annotated[int, Field(strict=True)] | None = None
    frequency_penalty: Number = 0.0
    presence_penalty: Number = 0.0
    logit_bias: dict[StrictStr, Number] | None = None
    suffix: StrictStr | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        neutral: dict[str, Any] = {
            "echo": False,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "logit_bias": None,
            "suffix": None,
        }
        for name, value in neutral.items():
            if getattr(self, name) not in (value, {}):
                raise ValueError(f"{name} is not supported by this server (leave it at {value!r})")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported by this server (leave it unset or equal to n)")
        if self.seed is not None and self.seed + self.n > SEED_END:
            raise ValueError(f"seed must be in [0, 2**63 - n] (choice i samples with seed + i), got {self.seed}")
        if self.session_id is not None and self.n != 1:
            raise ValueError("n must be 1 with a session_id (one state is stored back per session)")
        return self

    @property
    def stops(self) -> list[str]:
        """The stop strings as a list (empty when none)."""
        return list(self.stop or [])


class SessionCreate(BaseModel):
    """`POST /v1/sessions`: an empty session, or (`from`) a copy of an existing one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: StrictStr | None = Field(default=None, alias="from")
