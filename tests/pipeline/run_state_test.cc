// The pieces a streaming QuantizeModel run shares between its stages (pipeline/run_state.h),
// each alone: the bounded queue, the first-error run state with its cancellation check, and the
// memory meter.
#include "pipeline/run_state.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace nvfp4::pipeline {
namespace {

TEST(BoundedQueueTest, FifoOrder) {
  BoundedQueue<int> q(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(i));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.Pop(), i);
}

TEST(BoundedQueueTest, CapacityZeroHoldsOne) {
  BoundedQueue<int> q(0);
  ASSERT_TRUE(q.Push(7));
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.Push(8);
    pushed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(pushed.load()) << "a full queue must block Push";
  EXPECT_EQ(q.Pop(), 7);
  producer.join();
  EXPECT_TRUE(pushed.load());
  EXPECT_EQ(q.Pop(), 8);
}

TEST(BoundedQueueTest, CloseDrainsThenEnds) {
  BoundedQueue<std::unique_ptr<int>> q(2);
  ASSERT_TRUE(q.Push(std::make_unique<int>(1)));
  q.Close();
  EXPECT_FALSE(q.Push(std::make_unique<int>(2))) << "Push after Close";
  std::optional<std::unique_ptr<int>> first = q.Pop();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(**first, 1);
  EXPECT_FALSE(q.Pop().has_value());
}

TEST(BoundedQueueTest, CloseWakesBlockedWaiters) {
  BoundedQueue<int> empty(1), full(1);
  ASSERT_TRUE(full.Push(0));
  std::thread consumer([&] { EXPECT_FALSE(empty.Pop().has_value()); });
  std::thread producer([&] { EXPECT_FALSE(full.Push(1)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  empty.Close();
  full.Close();
  consumer.join();
  producer.join();
}

TEST(BoundedQueueTest, ProducerConsumerKeepsEveryItemInOrder) {
  BoundedQueue<int> q(2);
  constexpr int kItems = 10000;
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) ASSERT_TRUE(q.Push(i));
    q.Close();
  });
  int expected = 0;
  while (std::optional<int> v = q.Pop()) EXPECT_EQ(*v, expected++);
  producer.join();
  EXPECT_EQ(expected, kItems);
}

TEST(RunStateTest, FirstFailureWinsAndRunsTheAction) {
  RunState state;
  int actions = 0;
  state.OnFail([&] { ++actions; });
  EXPECT_FALSE(state.failed());
  EXPECT_TRUE(state.status().ok());
  state.Fail(absl::InternalError("disk"));
  state.Fail(absl::DataLossError("later"));
  EXPECT_TRUE(state.failed());
  EXPECT_EQ(state.status(), absl::InternalError("disk"));
  EXPECT_EQ(actions, 2);  // every Fail closes (closing twice is harmless)
}

TEST(RunStateTest, CheckCancelledFailsWithCancelledOnce) {
  std::atomic<bool> cancel{false};
  int polls = 0;
  RunState state([&] {
    ++polls;
    return cancel.load();
  });
  EXPECT_FALSE(state.CheckCancelled());
  cancel = true;
  EXPECT_TRUE(state.CheckCancelled());
  EXPECT_EQ(state.status(), CancelledStatus());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(state.CheckCancelled());
  EXPECT_EQ(polls, 2) << "a failed run does not poll the hook again";
}

TEST(RunStateTest, CheckCancelledKeepsAnEarlierError) {
  RunState state([] { return true; });
  state.Fail(absl::InternalError("first"));
  EXPECT_TRUE(state.CheckCancelled());
  EXPECT_EQ(state.status(), absl::InternalError("first"));
}

TEST(RunStateTest, NoHookNeverCancels) {
  RunState state;
  EXPECT_FALSE(state.CheckCancelled());
  EXPECT_TRUE(CheckCancelled({}).ok());
  EXPECT_TRUE(CheckCancelled([] { return false; }).ok());
  EXPECT_EQ(CheckCancelled([] { return true; }), CancelledStatus());
}

TEST(MemoryMeterTest, UnitsAndBytesWithPeaks) {
  MemoryMeter meter;
  {
    MemoryMeter::Unit a(&meter);
    a.AddBytes(100);
    a.AddBytes(50);
    EXPECT_EQ(a.bytes(), 150u);
    MemoryMeter::Unit b(&meter);
    b.SetBytes(30);
    EXPECT_EQ(meter.peak_units(), 2);
    EXPECT_EQ(meter.peak_bytes(), 180u);
    a.SetBytes(10);  // inputs replaced by smaller outputs: one change, down
    meter.AddBytes(40);
    meter.AddBytes(-40);
    EXPECT_EQ(meter.peak_bytes(), 180u);
  }
  // Both units were given back: a new one starts from zero.
  MemoryMeter::Unit c(&meter);
  c.AddBytes(170);
  EXPECT_EQ(meter.peak_units(), 2);
  EXPECT_EQ(meter.peak_bytes(), 180u);
  c.AddBytes(20);
  EXPECT_EQ(meter.peak_bytes(), 190u);
}

TEST(MemoryMeterTest, UnitMovesAndReleasesOnce) {
  MemoryMeter meter;
  MemoryMeter::Unit a(&meter);
  a.AddBytes(64);
  MemoryMeter::Unit b = std::move(a);
  EXPECT_EQ(b.bytes(), 64u);
  b.Release();
  b.Release();                  // no-op
  MemoryMeter::Unit c(&meter);  // one unit alive again, not three
  MemoryMeter::Unit d(&meter);
  EXPECT_EQ(meter.peak_units(), 2);
  c.AddBytes(64);
  EXPECT_EQ(meter.peak_bytes(), 64u) << "the released unit's bytes were given back";
}

}  // namespace
}  // namespace nvfp4::pipeline
