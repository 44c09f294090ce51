"""Real agent frameworks against the real server on loopback, changed in nothing but the base
URL: LangChain's `bind_tools` loop (invoke and stream), and the OpenAI Agents SDK on both of
its model APIs (Responses, its default, and Chat Completions). Each completes a tool-using
task: the tool runs with valid arguments and the run ends with a final answer."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_openai")
pytest.importorskip("agents")


def test_langchain_tool_loop(server, model_name: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"It is sunny and 21 C in {city}."

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key="EMPTY", model=model_name,
                     temperature=0, max_tokens=48, max_retries=0)
    bound = llm.bind_tools([get_weather], tool_choice="any", parallel_tool_calls=False)
    messages = [HumanMessage("What is the weather in Paris?")]
    ai = bound.invoke(messages)
    assert not ai.invalid_tool_calls and len(ai.tool_calls) == 1
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    merged = None
    for chunk in bound.stream(messages):
        merged = chunk if merged is None else merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [(call["name"], call["args"])]
    messages += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert final.content and not final.tool_calls


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_openai_agents_sdk_run(server, model_name: str, api: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export to OpenAI's servers
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return f"It is sunny and 21 C in {city}."

    async def run() -> str:
        client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="EMPTY", max_retries=0)
        model_class = OpenAIResponsesModel if api == "responses" else \
            OpenAIChatCompletionsModel
        agent = Agent(name="weather", instructions="Use the tools to answer.",
                      tools=[get_weather], model=model_class(model_name, openai_client=client),
                      model_settings=ModelSettings(tool_choice="required", temperature=0,
                                                   max_tokens=48, parallel_tool_calls=False))
        try:
            result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        finally:
            await client.close()
        return result.final_output

    final = asyncio.run(run())
    assert cities and all(isinstance(c, str) and c for c in cities)  # the tool ran
    assert isinstance(final, str) and final  # and the agent answered after it
