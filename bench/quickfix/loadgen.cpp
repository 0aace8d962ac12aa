// A QuickFIX load generator for bench/quickfix.py: one FIX.4.4 session over
// mutual TLS (SSLSocketInitiator; Debian's libquickfix 1.15 is built with
// OpenSSL, compile with -DHAVE_SSL=1), NewOrderSingle(D) out, ExecutionReport(8) in.
//
// Usage: qf_loadgen SETTINGS_FILE OUT_DIR [key=value ...]
//   warmup=N        N orders at the steady rate first, not recorded (default 1000)
//   rate=R          steady orders per second (default 1000)
//   seconds=S       steady phase length (default 10)
//   burst=N         then N orders back to back (default 5000; 0 skips)
//   relay_pid=P     sample this process's CPU time and run-queue wait (/proc/P/task/*/schedstat) per phase
//   venue_pid=P     the same for the venue
//   settle_ms=M     pause between phases once every order is filled (default 300)
//   drain_s=D       give up waiting for answers D s after a phase's last send (default 30)
//
// Per order it records the time of the *first* ExecutionReport for its
// ClOrdID(11) and of the Fill (ExecType(150)=F or 2).  Steady orders are paced
// by clock_nanosleep(TIMER_ABSTIME) against a fixed schedule and latency is
// measured from each order's *intended* send time, so a late send (the
// generator or the system under test falling behind) counts as latency:
// coordinated omission corrected.  Burst orders go out as fast as
// Session::sendToTarget takes them; their latency runs from the actual send.
//
// Writes OUT_DIR/<phase>.lat (one little-endian int64 per order: nanoseconds
// to the first ExecutionReport, -1 when none came) and OUT_DIR/result.json
// (counts, elapsed times, CPU); QuickFIX's SSL layer prints certificate checks
// on stdout, so results go to files.  Exit 0 only when every order was filled.

#include <quickfix/Application.h>
#include <quickfix/Log.h>
#include <quickfix/MessageStore.h>
#include <quickfix/SSLSocketInitiator.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/fix44/NewOrderSingle.h>

#include <dirent.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

static int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
  timespec ts{time_t(t / 1000000000), long(t % 1000000000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

// Nanoseconds every thread of a process spent on a CPU and waiting for one (runnable, not running):
// the first two fields of /proc/PID/task/TID/schedstat.  {-1, -1} when the process is gone.
struct Cpu {
  int64_t run = -1, wait = -1;
};

static Cpu cpu_of(long pid) {
  Cpu c;
  if (pid <= 0) return c;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return c;
  c.run = c.wait = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/schedstat");
    long long run = 0, wait = 0;
    if (f >> run >> wait) c.run += run, c.wait += wait;
  }
  closedir(d);
  return c;
}

static Cpu operator-(const Cpu& a, const Cpu& b) {
  Cpu c;
  if (a.run >= 0 && b.run >= 0) c.run = a.run - b.run, c.wait = a.wait - b.wait;
  return c;
}

struct PhaseData {
  std::string name;
  char tag;
  long n = 0;
  std::vector<int64_t> intended, sent, first, fill;
  std::atomic<long> answered{0}, filled{0}, rejected{0};
  int64_t start = 0, last_send = 0, end = 0;
  Cpu relay, venue, own;
  bool recorded = true;
};

class LoadClient : public FIX::Application {
 public:
  std::atomic<bool> logged_on{false};
  std::atomic<long> business_rejects{0}, session_rejects{0}, unknown{0};
  FIX::SessionID session;
  std::map<char, PhaseData*> phases;

  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID& id) override {
    session = id;
    logged_on = true;
  }
  void onLogout(const FIX::SessionID&) override { logged_on = false; }
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}
  void fromAdmin(const FIX::Message& m, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::RejectLogon) override {
    FIX::MsgType type;
    m.getHeader().getField(type);
    if (type.getValue() == "3") session_rejects++;
  }
  void fromApp(const FIX::Message& m, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
      FIX::UnsupportedMessageType) override {
    const int64_t t = now_ns();  // as soon as QuickFIX hands the message over
    FIX::MsgType type;
    m.getHeader().getField(type);
    if (type.getValue() == "j") {
      business_rejects++;
      return;
    }
    if (type.getValue() != "8") return;
    FIX::ClOrdID id;
    if (!m.isSetField(id)) {
      unknown++;
      return;
    }
    m.getField(id);
    const std::string& s = id.getValue();
    auto it = s.empty() ? phases.end() : phases.find(s[0]);
    long i = -1;
    if (it != phases.end()) i = std::strtol(s.c_str() + 1, nullptr, 10);
    if (it == phases.end() || i < 0 || i >= it->second->n) {
      unknown++;
      return;
    }
    PhaseData& p = *it->second;
    if (p.first[i] == 0) {
      p.first[i] = t;
      p.answered++;
    }
    FIX::ExecType exec;
    m.getField(exec);
    const char e = exec.getValue();
    if ((e == FIX::ExecType_TRADE || e == FIX::ExecType_FILL) && p.fill[i] == 0) {
      p.fill[i] = t;
      p.filled++;
    } else if (e == FIX::ExecType_REJECTED) {
      p.rejected++;
    }
  }
};

static std::string seconds(int64_t ns) { return ns < 0 ? std::string("null") : std::to_string(ns / 1e9); }

static std::string json_phase(const PhaseData& p, const std::string& extra) {
  std::ostringstream o;
  o << "{\"phase\": \"" << p.name << "\", \"orders\": " << p.n << ", \"answered\": " << p.answered
    << ", \"filled\": " << p.filled << ", \"rejected\": " << p.rejected
    << ", \"send_s\": " << (p.last_send - p.start) / 1e9 << ", \"elapsed_s\": " << (p.end - p.start) / 1e9
    << ", \"relay_cpu_s\": " << seconds(p.relay.run) << ", \"relay_wait_s\": " << seconds(p.relay.wait)
    << ", \"venue_cpu_s\": " << seconds(p.venue.run) << ", \"venue_wait_s\": " << seconds(p.venue.wait)
    << ", \"client_cpu_s\": " << seconds(p.own.run) << ", \"client_wait_s\": " << seconds(p.own.wait) << extra
    << ", \"file\": \"" << p.name << ".lat\"}";
  return o.str();
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: qf_loadgen SETTINGS_FILE OUT_DIR [warmup=N rate=R seconds=S burst=N relay_pid=P "
                 "venue_pid=P settle_ms=M drain_s=D]"
              << std::endl;
    return 2;
  }
  std::map<std::string, double> opt{{"warmup", 1000}, {"rate", 1000}, {"seconds", 10},   {"burst", 5000},
                                    {"relay_pid", 0}, {"venue_pid", 0}, {"settle_ms", 300}, {"drain_s", 30}};
  for (int k = 3; k < argc; ++k) {
    std::string a = argv[k];
    auto eq = a.find('=');
    if (eq == std::string::npos || opt.find(a.substr(0, eq)) == opt.end()) {
      std::cerr << "qf_loadgen: unknown argument " << a << std::endl;
      return 2;
    }
    opt[a.substr(0, eq)] = std::atof(a.c_str() + eq + 1);
  }
  const std::string out = argv[2];
  const long relay_pid = long(opt["relay_pid"]), venue_pid = long(opt["venue_pid"]);
  const double rate = opt["rate"];
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake on time (default slack is 50 µs)

  PhaseData warm, steady, burst;
  warm.name = "warmup", warm.tag = 'W', warm.n = long(opt["warmup"]), warm.recorded = false;
  steady.name = "steady", steady.tag = 'S', steady.n = long(opt["rate"] * opt["seconds"]);
  burst.name = "burst", burst.tag = 'B', burst.n = long(opt["burst"]);
  std::vector<PhaseData*> all{&warm, &steady, &burst};
  LoadClient app;
  for (PhaseData* p : all) {  // allocated before logon: the reader thread only ever indexes them
    p->intended.assign(p->n, 0), p->sent.assign(p->n, 0), p->first.assign(p->n, 0), p->fill.assign(p->n, 0);
    app.phases[p->tag] = p;
  }
  try {
    FIX::SessionSettings settings(argv[1]);
    FIX::MemoryStoreFactory store;
    FIX::ScreenLogFactory log(false, false, false);
    FIX::SSLSocketInitiator initiator(app, store, settings, log);
    const int64_t t_connect = now_ns();
    initiator.start();
    while (!app.logged_on && now_ns() - t_connect < int64_t(30e9))
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!app.logged_on) {
      std::cerr << "qf_loadgen: no Logon answer within 30 s" << std::endl;
      std::_Exit(1);  // initiator.stop() can wait on a connection that never came up
    }
    const double logon_s = (now_ns() - t_connect) / 1e9;

    auto send = [&](PhaseData& p, long i) {
      FIX44::NewOrderSingle order(FIX::ClOrdID(std::string(1, p.tag) + std::to_string(i)), FIX::Side(FIX::Side_BUY),
                                  FIX::TransactTime(), FIX::OrdType(FIX::OrdType_LIMIT));
      order.set(FIX::HandlInst('1'));
      order.set(FIX::Symbol("INTC"));
      order.set(FIX::OrderQty(100));
      order.set(FIX::Price(30.15));
      p.sent[i] = now_ns();
      FIX::Session::sendToTarget(order, app.session);
    };
    auto drain = [&](PhaseData& p) {
      const int64_t deadline = now_ns() + int64_t(opt["drain_s"] * 1e9);
      while (p.filled + p.rejected < p.n && app.logged_on && now_ns() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      int64_t end = p.last_send;
      for (long i = 0; i < p.n; ++i) end = std::max(end, std::max(p.first[i], p.fill[i]));
      p.end = end;
    };
    auto paced = [&](PhaseData& p) {
      const int64_t interval = int64_t(1e9 / rate);
      p.start = now_ns() + 1000000;
      for (long i = 0; i < p.n && app.logged_on; ++i) {
        p.intended[i] = p.start + i * interval;
        sleep_until(p.intended[i]);
        send(p, i);
      }
      p.last_send = now_ns();
    };
    auto back_to_back = [&](PhaseData& p) {
      p.start = now_ns();
      for (long i = 0; i < p.n && app.logged_on; ++i) {
        send(p, i);
        p.intended[i] = p.sent[i];
      }
      p.last_send = now_ns();
    };
    auto measured = [&](PhaseData& p, bool is_paced) {
      const Cpu r0 = cpu_of(relay_pid), v0 = cpu_of(venue_pid), c0 = cpu_of(getpid());
      is_paced ? paced(p) : back_to_back(p);
      drain(p);
      p.relay = cpu_of(relay_pid) - r0, p.venue = cpu_of(venue_pid) - v0, p.own = cpu_of(getpid()) - c0;
      std::this_thread::sleep_for(std::chrono::milliseconds(long(opt["settle_ms"])));
    };
    if (warm.n) measured(warm, true);
    if (steady.n) measured(steady, true);
    if (burst.n) measured(burst, false);

    std::ostringstream js;
    js << "{\"logon_s\": " << logon_s << ", \"business_rejects\": " << app.business_rejects
       << ", \"session_rejects\": " << app.session_rejects << ", \"unknown\": " << app.unknown << ", \"phases\": [";
    bool comma = false;
    for (PhaseData* p : all) {
      if (!p->n || !p->recorded) continue;
      std::vector<int64_t> lat(p->n, -1);
      int64_t lag_max = 0;
      for (long i = 0; i < p->n; ++i) {
        if (p->first[i]) lat[i] = p->first[i] - p->intended[i];
        if (p->sent[i]) lag_max = std::max(lag_max, p->sent[i] - p->intended[i]);
      }
      FILE* f = std::fopen((out + "/" + p->name + ".lat").c_str(), "wb");
      if (f == nullptr || std::fwrite(lat.data(), sizeof(int64_t), lat.size(), f) != lat.size()) {
        std::cerr << "qf_loadgen: cannot write " << out << "/" << p->name << ".lat" << std::endl;
        return 1;
      }
      std::fclose(f);
      std::ostringstream extra;
      extra << ", \"rate\": " << (p == &steady ? rate : 0.0) << ", \"send_lag_max_us\": " << lag_max / 1e3;
      js << (comma ? ", " : "") << json_phase(*p, extra.str());
      comma = true;
    }
    js << "]}";
    std::ofstream(out + "/result.json") << js.str() << std::endl;
    bool ok = true;
    for (PhaseData* p : all) ok = ok && p->filled == p->n;
    initiator.stop(false);  // Logout, wait for the answer
    if (!ok) std::cerr << "qf_loadgen: not every order was filled" << std::endl;
    return ok ? 0 : 1;
  } catch (std::exception& e) {
    std::cerr << "qf_loadgen: " << e.what() << std::endl;
    return 1;
  }
}
