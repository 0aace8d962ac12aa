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
// With FIXGW_HMAC_KEY (hex) in the environment it signs every message it sends for an
// identity with `signing = "hmac-sha256"`: SignatureLength(93) = 44 and a placeholder
// Signature(89) first, serialise once to learn the bytes up to "93=", HMAC them, set
// the real Signature(89) (same length, so BodyLength and the bytes signed stay put).

#include <quickfix/Application.h>
#include <quickfix/FileLog.h>
#include <quickfix/MessageStore.h>
#include <quickfix/SSLSocketInitiator.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/fix44/ExecutionReport.h>
#include <quickfix/fix44/NewOrderSingle.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

static std::string hmac_key() {
  const char* hex = std::getenv("FIXGW_HMAC_KEY");
  std::string key;
  for (size_t i = 0; hex != nullptr && hex[i] && hex[i + 1]; i += 2)
    key.push_back(static_cast<char>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  return key;
}

// DESIGN §4: the signed bytes run from "8=" up to and including the SOH before "93=".
static void sign(FIX::Message& m, const std::string& key) {
  if (key.empty()) return;
  m.getTrailer().setField(FIX::SignatureLength(44));  // base64 of 32 bytes
  m.getTrailer().setField(FIX::Signature(std::string(44, 'A')));
  const std::string wire = m.toString();
  const std::string signed_bytes = wire.substr(0, wire.find(std::string("\x01") + "93=") + 1);
  unsigned char mac[32];
  unsigned int len = sizeof mac;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(signed_bytes.data()), signed_bytes.size(), mac, &len);
  std::string b64(44, '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&b64[0]), mac, static_cast<int>(len));
  m.getTrailer().setField(FIX::Signature(b64));
}

class AlgoClient : public FIX::Application {
 public:
  const std::string key = hmac_key();
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
  void toAdmin(FIX::Message& m, const FIX::SessionID&) override { sign(m, key); }
  void toApp(FIX::Message& m, const FIX::SessionID&) throw(FIX::DoNotSend) override { sign(m, key); }
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
    const char* wait = std::getenv("QF_LOGON_WAIT");  // seconds to wait for the Logon answer
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait ? std::atoi(wait) : 30);
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
