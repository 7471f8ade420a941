// nvfp4ctl jobs list|get|watch|cancel.
#include <iostream>
#include <memory>

#include "client/cli/exit_codes.h"
#include "client/cli/remote_common.h"

namespace nvfp4::cli {

void AddJobsCommand(CLI::App& root, SubcommandList& out) {
  struct Flags {
    RemoteFlags remote;
    std::string job_id;
    std::vector<std::string> states;
    int page_size = 50;
    bool all_pages = true;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* jobs = root.add_subcommand("jobs", "List, inspect, watch and cancel jobs on nvfp4d.");
  jobs->require_subcommand(1);
  jobs->fallthrough();  // "jobs list --server X" as well as "jobs --server X list"
  AddRemoteFlags(jobs, &f->remote);
  jobs->footer(
      "Exit codes: 0 ok, 1 server error, 2 user error (e.g. unknown job), 3 watched job "
      "failed or was cancelled.");

  CLI::App* list = jobs->add_subcommand("list", "List jobs, newest first.");
  list->add_option("--state", f->states, "Only jobs in this state (repeatable).")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"}));
  list->add_option("--page-size", f->page_size, "Jobs per request.")->check(CLI::Range(1, 1000));
  CLI::App* get = jobs->add_subcommand("get", "Show one job.");
  CLI::App* watch = jobs->add_subcommand("watch", "Follow a job until it ends (re-attachable).");
  CLI::App* cancel = jobs->add_subcommand("cancel", "Cancel a job (idempotent).");
  for (CLI::App* a : {get, watch, cancel}) {
    a->add_option("job_id", f->job_id, "The job id.")->required();
  }

  out.push_back({jobs, [f, list, get, watch, cancel]() {
                   auto client = ConnectRemote(f->remote);
                   if (!client.ok()) return ReportRemoteError(client.status());
                   if (list->parsed()) {
                     v1::ListJobsRequest r;
                     r.set_page_size(f->page_size);
                     for (const std::string& s : f->states) {
                       v1::JobState st = v1::JOB_STATE_UNSPECIFIED;
                       std::string upper = "JOB_STATE_";
                       for (char c : s) upper += static_cast<char>(std::toupper(c));
                       v1::JobState_Parse(upper, &st);
                       r.add_states(st);
                     }
                     while (true) {
                       auto page = (*client)->ListJobs(r);
                       if (!page.ok()) return ReportRemoteError(page.status());
                       for (const v1::Job& j : page->jobs()) {
                         std::cout << (f->remote.json ? JobJson(j) : JobLine(j)) << "\n";
                       }
                       if (page->next_page_token().empty()) break;
                       r.set_page_token(page->next_page_token());
                     }
                     return kExitOk;
                   }
                   if (watch->parsed()) return WatchAndRender(**client, f->job_id, f->remote.json);
                   auto job = get->parsed() ? (*client)->GetJob(f->job_id)
                                            : (*client)->CancelJob(f->job_id);
                   if (!job.ok()) return ReportRemoteError(job.status());
                   std::cout << (f->remote.json ? JobJson(*job) : JobLine(*job)) << "\n";
                   if (!f->remote.json && get->parsed()) {
                     for (const v1::OutputFile& o : job->outputs()) {
                       std::cout << "  " << o.uri() << "  " << o.size_bytes() << " bytes  sha256 "
                                 << o.sha256() << "\n";
                     }
                   }
                   (void)cancel;
                   return kExitOk;
                 }});
}

}  // namespace nvfp4::cli
