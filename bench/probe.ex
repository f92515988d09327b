defmodule Bench.Probe do
  @moduledoc false
  # Loaded on every Elixir node of the multi-node benchmarks (ours and the
  # 0.5.1 stand-in): distribution counters and the message-throughput sink.

  @doc "Distribution socket counters towards each node, except `exclude`."
  def dist_stats(exclude) do
    for {n, port} <- :erlang.system_info(:dist_ctrl), is_port(port), n not in exclude do
      {:ok, st} = :inet.getstat(port, [:send_cnt, :send_oct, :recv_cnt, :recv_oct])
      {n, st[:send_cnt], st[:send_oct], st[:recv_cnt], st[:recv_oct]}
    end
  end

  @doc "Starts the registered sink: on message `{:m, n-1, from, _}` it sends :done to from."
  def start_sink do
    if Process.whereis(:bench_sink),
      do: :ok,
      else:
        (
          spawn(fn ->
            Process.register(self(), :bench_sink)
            sink()
          end)

          :ok
        )
  end

  defp sink do
    receive do
      {:m, i, from, last, _} when i == last -> send(from, :done)
      _ -> :ok
    end

    sink()
  end

  @doc "Sends n small tuples to dest and waits for :done; returns microseconds."
  def blast(dest, n) do
    t0 = System.monotonic_time(:microsecond)
    payload = :binary.copy(<<7>>, 16)
    me = self()
    Enum.each(0..(n - 1), fn i -> send(dest, {:m, i, me, n - 1, payload}) end)

    receive do
      :done -> System.monotonic_time(:microsecond) - t0
    after
      60_000 -> :timeout
    end
  end
end
