// Progress lines on stderr ("[2/7] model.layers.0.mlp.down_proj.weight ..."), shown only when
// stderr is a terminal so that scripts and logs stay clean.
#ifndef NVFP4_CLIENT_CLI_PROGRESS_H_
#define NVFP4_CLIENT_CLI_PROGRESS_H_

#include <ostream>
#include <string>

namespace nvfp4::cli {

class Progress {
 public:
  // `enabled` false makes every call a no-op; see StderrIsTerminal().
  Progress(std::ostream& out, int total, bool enabled);

  // Announces item `label` as the next of `total`.
  void Step(const std::string& label);
  // Clears the progress line (call before printing results to the same terminal).
  void Clear();

 private:
  std::ostream& out_;
  int total_;
  int done_ = 0;
  bool enabled_;
  bool line_open_ = false;
};

// True when stderr is attached to a terminal.
bool StderrIsTerminal();

}  // namespace nvfp4::cli

#endif  // NVFP4_CLIENT_CLI_PROGRESS_H_
