#include "client/cli/progress.h"

#include <unistd.h>

namespace nvfp4::cli {

Progress::Progress(std::ostream& out, int total, bool enabled)
    : out_(out), total_(total), enabled_(enabled) {}

void Progress::Step(const std::string& label) {
  ++done_;
  if (!enabled_) return;
  out_ << "\r\033[K[" << done_ << "/" << total_ << "] " << label << " ..." << std::flush;
  line_open_ = true;
}

void Progress::Clear() {
  if (!enabled_ || !line_open_) return;
  out_ << "\r\033[K" << std::flush;
  line_open_ = false;
}

bool StderrIsTerminal() { return ::isatty(STDERR_FILENO) == 1; }

}  // namespace nvfp4::cli
