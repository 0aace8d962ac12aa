// The QuickFIX acceptance-test application, as an independent echo peer.
//
// Built (C++14: QuickFIX 1.15 uses dynamic exception specifications) against
// Debian's libquickfix-dev by the interop test
// and run behind fixgw in place of our exchange simulator: it echoes
// NewOrderSingle (dropping a PossResend duplicate of a ClOrdID seen in this
// session), SecurityDefinition and Email, and lets the QuickFIX session
// answer every other application message with BusinessMessageReject(j),
// BusinessRejectReason(380)=3 (UnsupportedMessageType).
//
// Usage: quickfix_echo SETTINGS_FILE   (stops on SIGTERM/SIGINT)

#include <quickfix/Application.h>
#include <quickfix/Log.h>
#include <quickfix/MessageStore.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketAcceptor.h>
#include <quickfix/Values.h>

#include <csignal>
#include <iostream>
#include <set>
#include <string>
#include <unistd.h>
#include <utility>

static volatile std::sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

class EchoApplication : public FIX::Application {
 public:
  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID&) override {}
  void onLogout(const FIX::SessionID& id) override {
    // the acceptance application forgets ClOrdIDs when its session ends
    std::set<std::pair<std::string, std::string>> keep;
    for (const auto& p : seen_)
      if (p.second != id.toString()) keep.insert(p);
    seen_.swap(keep);
  }
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}
  void fromAdmin(const FIX::Message&, const FIX::SessionID&)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::RejectLogon) override {}

  void fromApp(const FIX::Message& message, const FIX::SessionID& id)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
             FIX::UnsupportedMessageType) override {
    FIX::MsgType msgType;
    message.getHeader().getField(msgType);
    const std::string& t = msgType.getValue();
    if (t == "D") {
      FIX::PossResend possResend(false);
      if (message.getHeader().isSetField(possResend)) message.getHeader().getField(possResend);
      FIX::ClOrdID clOrdID;
      message.getField(clOrdID);
      auto key = std::make_pair(clOrdID.getValue(), id.toString());
      if (possResend && seen_.count(key)) return;
      seen_.insert(key);
    } else if (t != "d" && t != "C") {
      throw FIX::UnsupportedMessageType();
    }
    FIX::Message echo = message;
    try {
      FIX::Session::sendToTarget(echo, id);
    } catch (FIX::SessionNotFound&) {
    }
  }

 private:
  std::set<std::pair<std::string, std::string>> seen_;
};

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " SETTINGS_FILE\n";
    return 2;
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  try {
    FIX::SessionSettings settings(argv[1]);
    EchoApplication app;
    FIX::MemoryStoreFactory store;
    FIX::ScreenLogFactory log(false, false, false);
    FIX::SocketAcceptor acceptor(app, store, settings, log);
    acceptor.start();
    std::cout << "quickfix_echo listening" << std::endl;
    while (!g_stop) usleep(100000);
    acceptor.stop();
  } catch (std::exception& e) {
    std::cerr << "quickfix_echo: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
