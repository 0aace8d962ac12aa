// A QuickFIX algo client: logs on to fixgw over mutual TLS, sends N NewOrderSingle
// orders, waits for every fill, logs out.  Built against Debian's libquickfix-dev
// (1.15, with OpenSSL; compile with -DHAVE_SSL=1) by tests/interop/test_quickfix_client.py.
//
// Usage: quickfix_client SETTINGS_FILE ORDERS WINDOW [ORDERS_WHILE_DOWN]
// Prints "sent=N filled=M rejected=R" and exits 0 only when M == N.
//
// With ORDERS_WHILE_DOWN, after the first ORDERS are filled it prints READY and
// waits for the gateway to go away (the test kills and restarts it); orders
// sent meanwhile are stored by QuickFIX under the next sequence numbers, so at
// the next Logon the gateway sees the gap, asks for a resend, and they arrive
// as PossDupFlag(43)=Y resends.
//
// QuickFIX 1.15 negotiates up to TLS 1.2, which fixgw accepts (AEAD ciphers only).
// To sign messages for an identity with `signing = "hmac-sha256"`, a QuickFIX
// client sets SignatureLength(93) / Signature(89) itself in toApp (see the
// README: the MAC covers the message as DESIGN §4 defines); this client's
// identity does not sign.

#include <quickfix/Application.h>
#include <quickfix/FileLog.h>
#include <quickfix/MessageStore.h>
#include <quickfix/SSLSocketInitiator.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/fix44/ExecutionReport.h>
#include <quickfix/fix44/NewOrderSingle.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

class AlgoClient : public FIX::Application {
 public:
  std::atomic<bool> logged_on{false};
  std::atomic<int> filled{0};
  std::atomic<int> rejected{0};
  std::atomic<int> acked{0};
  FIX::SessionID session;

  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID& id) override {
    session = id;
    logged_on = true;
  }
  void onLogout(const FIX::SessionID&) override { logged_on = false; }
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}
  void fromAdmin(const FIX::Message&, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::RejectLogon) override {}
  void fromApp(const FIX::Message& message, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
      FIX::UnsupportedMessageType) override {
    FIX::MsgType type;
    message.getHeader().getField(type);
    if (type.getValue() != "8") return;
    FIX::ExecType exec;
    message.getField(exec);
    if (exec.getValue() == FIX::ExecType_FILL || exec.getValue() == FIX::ExecType_TRADE) filled++;
    else if (exec.getValue() == FIX::ExecType_REJECTED) rejected++;
    else acked++;
  }
};

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: quickfix_client SETTINGS_FILE ORDERS WINDOW [ORDERS_WHILE_DOWN]" << std::endl;
    return 2;
  }
  const int first = std::stoi(argv[2]);
  const int window = std::stoi(argv[3]);
  const int while_down = argc == 5 ? std::stoi(argv[4]) : 0;
  const int orders = first + while_down;
  try {
    FIX::SessionSettings settings(argv[1]);
    AlgoClient app;
    FIX::MemoryStoreFactory store;
    FIX::ScreenLogFactory log(false, false, false);
    FIX::SSLSocketInitiator initiator(app, store, settings, log);
    initiator.start();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!app.logged_on && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!app.logged_on) {
      std::cerr << "no Logon answer from the gateway" << std::endl;
      initiator.stop(true);
      return 1;
    }
    int sent = 0;
    auto send_order = [&]() {
      FIX44::NewOrderSingle order(FIX::ClOrdID("QF" + std::to_string(++sent)), FIX::Side(FIX::Side_BUY),
                                  FIX::TransactTime(), FIX::OrdType(FIX::OrdType_LIMIT));
      order.set(FIX::HandlInst('1'));
      order.set(FIX::Symbol("INTC"));
      order.set(FIX::OrderQty(100));
      order.set(FIX::Price(30.15));
      FIX::Session::sendToTarget(order, app.session);
    };
    auto until_filled = [&](int n, int seconds) {
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
      while ((app.filled + app.rejected) < n && std::chrono::steady_clock::now() < end) {
        while (app.logged_on && sent < n && sent - (app.filled + app.rejected) < window) send_order();
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    };
    until_filled(first, 300);
    if (while_down > 0 && app.filled == first) {
      std::cout << "READY" << std::endl;
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (app.logged_on && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (app.logged_on) {
        std::cerr << "the gateway never went away" << std::endl;
        return 1;
      }
      for (int i = 0; i < while_down; ++i) send_order();  // stored, not sent: the session is down
      std::cout << "QUEUED " << while_down << std::endl;
      end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!app.logged_on && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      until_filled(orders, 120);
    }
    std::cout << "sent=" << sent << " filled=" << app.filled << " rejected=" << app.rejected << std::endl;
    initiator.stop(false);  // Logout and wait for the answer
    return app.filled == orders ? 0 : 1;
  } catch (std::exception& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  }
}
