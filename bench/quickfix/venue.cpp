// A QuickFIX venue for bench/quickfix.py: an acceptor that answers every
// NewOrderSingle(D) with two ExecutionReports(8) — New (ExecType(150)=0,
// OrdStatus(39)=0) and then Fill (ExecType(150)=F, OrdStatus(39)=2, LastQty(32),
// LastPx(31)) — both sent from fromApp, as the acceptance-test echo peer
// (tests/interop/quickfix_echo.cpp) sends its echo.  Every other application
// message is answered by the QuickFIX session with BusinessMessageReject(j).
//
// Built (C++14: QuickFIX 1.15 uses dynamic exception specifications) against
// Debian's libquickfix-dev, which is compiled with OpenSSL (-DHAVE_SSL=1 exposes
// the SSL classes), by bench/quickfix.py.
//
// Usage: qf_venue SETTINGS_FILE [tls]
//   tls: SSLSocketAcceptor (the settings name the server certificate and
//        CertificateVerifyLevel=1, so the client certificate is required);
//   otherwise a plain SocketAcceptor (the relays' exchange leg is plain TCP,
//   as in config/conformance.toml).
// Prints "listening" once the acceptor is up; stops on SIGTERM/SIGINT and then
// prints "orders=N" on stdout.

#include <quickfix/Application.h>
#include <quickfix/Log.h>
#include <quickfix/MessageStore.h>
#include <quickfix/SSLSocketAcceptor.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketAcceptor.h>
#include <quickfix/Values.h>
#include <quickfix/fix44/ExecutionReport.h>

#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <unistd.h>

static volatile std::sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

class Venue : public FIX::Application {
 public:
  long orders = 0;

  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID&) override {}
  void onLogout(const FIX::SessionID&) override {}
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}
  void fromAdmin(const FIX::Message&, const FIX::SessionID&)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::RejectLogon) override {}

  void fromApp(const FIX::Message& message, const FIX::SessionID& id)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
            FIX::UnsupportedMessageType) override {
    FIX::MsgType msgType;
    message.getHeader().getField(msgType);
    if (msgType.getValue() != "D") throw FIX::UnsupportedMessageType();
    FIX::ClOrdID clOrdID;
    FIX::Side side;
    FIX::Symbol symbol;
    FIX::OrderQty qty;
    FIX::Price price;
    message.getField(clOrdID);
    message.getField(side);
    message.getField(symbol);
    message.getField(qty);
    message.getField(price);
    const std::string n = std::to_string(++orders);

    FIX44::ExecutionReport ack(FIX::OrderID("O" + n), FIX::ExecID("E" + n + "a"), FIX::ExecType(FIX::ExecType_NEW),
                               FIX::OrdStatus(FIX::OrdStatus_NEW), side, FIX::LeavesQty(qty.getValue()),
                               FIX::CumQty(0), FIX::AvgPx(0));
    ack.set(clOrdID);
    ack.set(symbol);
    ack.set(qty);
    ack.set(price);
    FIX44::ExecutionReport fill(FIX::OrderID("O" + n), FIX::ExecID("E" + n + "b"),
                                FIX::ExecType(FIX::ExecType_TRADE), FIX::OrdStatus(FIX::OrdStatus_FILLED), side,
                                FIX::LeavesQty(0), FIX::CumQty(qty.getValue()), FIX::AvgPx(price.getValue()));
    fill.set(clOrdID);
    fill.set(symbol);
    fill.set(qty);
    fill.set(price);
    fill.set(FIX::LastQty(qty.getValue()));
    fill.set(FIX::LastPx(price.getValue()));
    try {
      FIX::Session::sendToTarget(ack, id);
      FIX::Session::sendToTarget(fill, id);
    } catch (FIX::SessionNotFound&) {
    }
  }
};

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::cerr << "usage: " << argv[0] << " SETTINGS_FILE [tls]\n";
    return 2;
  }
  const bool tls = argc == 3 && std::strcmp(argv[2], "tls") == 0;
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  try {
    FIX::SessionSettings settings(argv[1]);
    Venue app;
    FIX::MemoryStoreFactory store;
    FIX::ScreenLogFactory log(false, false, false);
    std::unique_ptr<FIX::Acceptor> acceptor;
    if (tls)
      acceptor.reset(new FIX::SSLSocketAcceptor(app, store, settings, log));
    else
      acceptor.reset(new FIX::SocketAcceptor(app, store, settings, log));
    acceptor->start();
    std::cout << "listening" << std::endl;
    while (!g_stop) usleep(50000);
    acceptor->stop();
    std::cout << "orders=" << app.orders << std::endl;
  } catch (std::exception& e) {
    std::cerr << "qf_venue: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
